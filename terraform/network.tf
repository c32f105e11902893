resource "google_compute_network" "diary" {
  name                    = var.cluster_name
  auto_create_subnetworks = false
  routing_mode            = "REGIONAL"

  depends_on = [google_project_service.enabled]
}

resource "google_compute_subnetwork" "nodes" {
  name          = "${var.cluster_name}-nodes"
  network       = google_compute_network.diary.id
  region        = var.region
  ip_cidr_range = var.subnet_cidr

  # Nodes have no external IPs: Google APIs (GCS, Artifact Registry, Secret Manager) over Private Google Access.
  private_ip_google_access   = true
  private_ipv6_google_access = "ENABLE_OUTBOUND_VM_ACCESS_TO_GOOGLE"

  secondary_ip_range {
    range_name    = "${var.cluster_name}-pods"
    ip_cidr_range = var.pods_cidr
  }

  secondary_ip_range {
    range_name    = "${var.cluster_name}-services"
    ip_cidr_range = var.services_cidr
  }

  log_config {
    aggregation_interval = "INTERVAL_10_MIN"
    flow_sampling        = 0.5
    metadata             = "INCLUDE_ALL_METADATA"
  }
}

# Explicit lowest-priority deny of all ingress, so denied connections are logged. GKE's own rules (control
# plane to nodes, pod to pod, load-balancer health checks) have priority 1000 and still apply.
resource "google_compute_firewall" "deny_all_ingress" {
  name      = "${var.cluster_name}-deny-all-ingress"
  network   = google_compute_network.diary.id
  direction = "INGRESS"
  priority  = 65534

  deny {
    protocol = "all"
  }

  source_ranges = ["0.0.0.0/0"]

  log_config {
    metadata = "INCLUDE_ALL_METADATA"
  }
}

# Outbound internet for private nodes: LLM provider APIs, model downloads, public container images.
resource "google_compute_router" "diary" {
  name    = "${var.cluster_name}-router"
  network = google_compute_network.diary.id
  region  = var.region
}

resource "google_compute_router_nat" "diary" {
  name                               = "${var.cluster_name}-nat"
  router                             = google_compute_router.diary.name
  region                             = var.region
  nat_ip_allocate_option             = "AUTO_ONLY"
  source_subnetwork_ip_ranges_to_nat = "LIST_OF_SUBNETWORKS"

  subnetwork {
    name                    = google_compute_subnetwork.nodes.id
    source_ip_ranges_to_nat = ["ALL_IP_RANGES"]
  }

  enable_dynamic_port_allocation      = true
  enable_endpoint_independent_mapping = false
  min_ports_per_vm                    = 64
  max_ports_per_vm                    = 4096

  log_config {
    enable = true
    filter = "ERRORS_ONLY"
  }
}

# Private services access: Cloud SQL gets an address in this range, reachable from the VPC only.
resource "google_compute_global_address" "private_services" {
  name          = "${var.cluster_name}-private-services"
  network       = google_compute_network.diary.id
  purpose       = "VPC_PEERING"
  address_type  = "INTERNAL"
  prefix_length = 20
}

resource "google_service_networking_connection" "private_services" {
  network                 = google_compute_network.diary.id
  service                 = "servicenetworking.googleapis.com"
  reserved_peering_ranges = [google_compute_global_address.private_services.name]

  # Deleting the peering fails while Cloud SQL still holds addresses in it; let the network's deletion remove it.
  deletion_policy = "ABANDON"
}
