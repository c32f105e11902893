resource "google_container_cluster" "diary" {
  # checkov:skip=CKV_GCP_24: PodSecurityPolicy was removed in Kubernetes 1.25 and GKE no longer offers it; Pod Security Admission (namespace labels) replaces it.
  # checkov:skip=CKV_GCP_65: Google Groups for RBAC needs a Google Workspace or Cloud Identity domain with a gke-security-groups group, which this stack does not assume; cluster access is granted with IAM roles.
  name     = var.cluster_name
  location = var.region # regional: the control plane is replicated across zones

  node_locations = var.zones

  network         = google_compute_network.diary.id
  subnetwork      = google_compute_subnetwork.nodes.id
  networking_mode = "VPC_NATIVE"

  ip_allocation_policy {
    cluster_secondary_range_name  = google_compute_subnetwork.nodes.secondary_ip_range[0].range_name
    services_secondary_range_name = google_compute_subnetwork.nodes.secondary_ip_range[1].range_name
  }

  # Dataplane V2 (eBPF) enforces NetworkPolicy; the legacy Calico add-on stays off.
  datapath_provider = "ADVANCED_DATAPATH"
  network_policy {
    enabled = false
  }
  enable_intranode_visibility = true

  # Node pools are managed below; the default pool is created (with the hardened settings) and removed at once.
  remove_default_node_pool = true
  initial_node_count       = 1
  node_config {
    service_account = google_service_account.nodes.email
    oauth_scopes    = ["https://www.googleapis.com/auth/cloud-platform"]
    image_type      = "COS_CONTAINERD"
    metadata = {
      disable-legacy-endpoints = "true"
    }
    workload_metadata_config {
      mode = "GKE_METADATA"
    }
    shielded_instance_config {
      enable_secure_boot          = true
      enable_integrity_monitoring = true
    }
  }

  private_cluster_config {
    enable_private_nodes    = true
    enable_private_endpoint = var.enable_private_endpoint
    master_ipv4_cidr_block  = var.master_ipv4_cidr_block
  }

  master_authorized_networks_config {
    gcp_public_cidrs_access_enabled = false

    dynamic "cidr_blocks" {
      for_each = var.master_authorized_networks
      content {
        cidr_block   = cidr_blocks.value.cidr_block
        display_name = cidr_blocks.value.display_name
      }
    }
  }

  master_auth {
    client_certificate_config {
      issue_client_certificate = false
    }
  }

  workload_identity_config {
    workload_pool = local.workload_identity_pool
  }

  release_channel {
    channel = "REGULAR"
  }

  enable_shielded_nodes = true
  enable_legacy_abac    = false

  # Enforces the project's Binary Authorization policy (the project default admits every image; tighten it to
  # the diary registry and the Dagster images per organisation).
  binary_authorization {
    evaluation_mode = "PROJECT_SINGLETON_POLICY_ENFORCE"
  }

  addons_config {
    # Mounts gs:// buckets as volumes (the landing bucket as the landing folder).
    gcs_fuse_csi_driver_config {
      enabled = true
    }
    gce_persistent_disk_csi_driver_config {
      enabled = true
    }
    http_load_balancing {
      disabled = false
    }
    horizontal_pod_autoscaling {
      disabled = false
    }
  }

  logging_config {
    enable_components = ["SYSTEM_COMPONENTS", "WORKLOADS"]
  }

  monitoring_config {
    enable_components = ["SYSTEM_COMPONENTS"]
    managed_prometheus {
      enabled = true
    }
  }

  # Remove idle GPU nodes sooner than the balanced profile would.
  # Node auto-provisioning stays off (the two pools below are the only node shapes).
  cluster_autoscaling {
    enabled             = false
    autoscaling_profile = "OPTIMIZE_UTILIZATION"
  }

  cost_management_config {
    enabled = true
  }

  maintenance_policy {
    recurring_window {
      start_time = "2024-01-06T03:00:00Z"
      end_time   = "2024-01-06T09:00:00Z"
      recurrence = "FREQ=WEEKLY;BYDAY=SA,SU"
    }
  }

  resource_labels = local.labels

  deletion_protection = true

  lifecycle {
    # The default pool's settings only matter while it exists, at creation.
    ignore_changes = [node_config, initial_node_count]

    precondition {
      condition     = alltrue([for zone in var.zones : startswith(zone, "${var.region}-")])
      error_message = "Every zone in var.zones must be in var.region."
    }
  }

  depends_on = [google_project_service.enabled]
}

resource "google_container_node_pool" "cpu" {
  name     = "cpu"
  cluster  = google_container_cluster.diary.id
  location = var.region

  autoscaling {
    total_min_node_count = var.cpu_min_nodes
    total_max_node_count = var.cpu_max_nodes
    location_policy      = "BALANCED"
  }

  management {
    auto_repair  = true
    auto_upgrade = true
  }

  upgrade_settings {
    strategy        = "SURGE"
    max_surge       = 1
    max_unavailable = 0
  }

  node_config {
    machine_type    = var.cpu_machine_type
    image_type      = "COS_CONTAINERD"
    disk_type       = "pd-balanced"
    disk_size_gb    = var.node_disk_size_gb
    service_account = google_service_account.nodes.email
    oauth_scopes    = ["https://www.googleapis.com/auth/cloud-platform"]

    labels = {
      "diary-platform/pool" = "cpu"
    }
    resource_labels = local.labels

    metadata = {
      disable-legacy-endpoints = "true"
    }

    workload_metadata_config {
      mode = "GKE_METADATA"
    }

    shielded_instance_config {
      enable_secure_boot          = true
      enable_integrity_monitoring = true
    }

    # Image streaming: pods start before the whole image has been pulled.
    gcfs_config {
      enabled = true
    }
  }

  lifecycle {
    precondition {
      condition     = var.cpu_min_nodes <= var.cpu_max_nodes
      error_message = "cpu_min_nodes must not exceed cpu_max_nodes."
    }
  }
}

# Transcription nodes: one GPU each, from zero to gpu_max_nodes. GKE labels every node
# cloud.google.com/gke-accelerator=<gpu_type> and taints it nvidia.com/gpu=present:NoSchedule; the
# transcription step's pods select that label and tolerate that taint, so nothing else lands here.
resource "google_container_node_pool" "gpu" {
  name     = "gpu"
  cluster  = google_container_cluster.diary.id
  location = var.region

  # Totals over all zones; ANY lets the autoscaler take Spot capacity in whichever zone has it.
  autoscaling {
    total_min_node_count = 0
    total_max_node_count = var.gpu_max_nodes
    location_policy      = "ANY"
  }

  management {
    auto_repair  = true
    auto_upgrade = true
  }

  upgrade_settings {
    strategy        = "SURGE"
    max_surge       = 1
    max_unavailable = 0
  }

  node_config {
    machine_type    = var.gpu_machine_type
    image_type      = "COS_CONTAINERD"
    disk_type       = "pd-balanced"
    disk_size_gb    = var.node_disk_size_gb
    spot            = var.gpu_spot
    service_account = google_service_account.nodes.email
    oauth_scopes    = ["https://www.googleapis.com/auth/cloud-platform"]

    guest_accelerator {
      type  = var.gpu_type
      count = 1
      gpu_driver_installation_config {
        gpu_driver_version = "LATEST"
      }
    }

    labels = {
      "diary-platform/pool" = "gpu"
    }
    resource_labels = local.labels

    # GKE adds this taint to GPU nodes itself; declared so that the plan shows it and nothing removes it.
    taint {
      key    = "nvidia.com/gpu"
      value  = "present"
      effect = "NO_SCHEDULE"
    }

    metadata = {
      disable-legacy-endpoints = "true"
    }

    workload_metadata_config {
      mode = "GKE_METADATA"
    }

    shielded_instance_config {
      enable_secure_boot          = true
      enable_integrity_monitoring = true
    }

    gcfs_config {
      enabled = true
    }
  }

  lifecycle {
    precondition {
      condition     = startswith(var.gpu_machine_type, local.gpu_machine_families[var.gpu_type])
      error_message = "nvidia-l4 needs a g2-* machine type (e.g. g2-standard-8), nvidia-tesla-t4 an n1-* one (e.g. n1-standard-8)."
    }
  }
}
