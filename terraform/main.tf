locals {
  labels = merge({ app = "diary-platform", managed-by = "terraform" }, var.labels)

  landing_bucket    = "${var.project_id}-diary-landing"
  data_bucket       = "${var.project_id}-diary-data"
  access_log_bucket = "${var.project_id}-diary-access-logs"

  # The prefix under the data bucket that DIARY_STORAGE_URI points at.
  data_prefix = "diary"

  # Machine families that can carry each accelerator.
  gpu_machine_families = {
    "nvidia-l4"       = "g2-"
    "nvidia-tesla-t4" = "n1-"
  }

  workload_identity_pool   = "${var.project_id}.svc.id.goog"
  workload_identity_member = "serviceAccount:${var.project_id}.svc.id.goog[${var.k8s_namespace}/${var.k8s_service_account}]"

  services = toset([
    "artifactregistry.googleapis.com",
    "binaryauthorization.googleapis.com",
    "cloudresourcemanager.googleapis.com",
    "cloudtrace.googleapis.com",
    "compute.googleapis.com",
    "container.googleapis.com",
    "iam.googleapis.com",
    "logging.googleapis.com",
    "monitoring.googleapis.com",
    "secretmanager.googleapis.com",
    "servicenetworking.googleapis.com",
    "sqladmin.googleapis.com",
    "storage.googleapis.com",
  ])
}

# The APIs everything below needs. Left enabled on destroy: other things in the project may use them.
resource "google_project_service" "enabled" {
  for_each = local.services

  project            = var.project_id
  service            = each.value
  disable_on_destroy = false
}
