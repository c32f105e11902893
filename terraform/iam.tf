# ---------------------------------------------------------------------------------------------------------
# Nodes: a dedicated service account with only what nodes need (logs, metrics, pulling images), instead of
# the Compute Engine default account and its Editor role.
# ---------------------------------------------------------------------------------------------------------

resource "google_service_account" "nodes" {
  account_id   = "${var.cluster_name}-nodes"
  display_name = "GKE nodes of the ${var.cluster_name} cluster"

  depends_on = [google_project_service.enabled]
}

locals {
  # Google's hardening guide's minimum for a node service account.
  node_roles = [
    "roles/logging.logWriter",
    "roles/monitoring.metricWriter",
    "roles/monitoring.viewer",
    "roles/stackdriver.resourceMetadata.writer",
    "roles/autoscaling.metricsWriter",
  ]
}

resource "google_project_iam_member" "nodes" {
  for_each = toset(local.node_roles)

  project = var.project_id
  role    = each.value
  member  = google_service_account.nodes.member
}

# Pulling images: on the diary repository only, not project-wide.
resource "google_artifact_registry_repository_iam_member" "nodes_pull" {
  location   = google_artifact_registry_repository.diary.location
  repository = google_artifact_registry_repository.diary.name
  role       = "roles/artifactregistry.reader"
  member     = google_service_account.nodes.member
}

# ---------------------------------------------------------------------------------------------------------
# Workloads: the platform's pods run as Kubernetes service account <k8s_namespace>/<k8s_service_account>,
# which workload identity maps to this Google service account. No keys are ever created.
# ---------------------------------------------------------------------------------------------------------

resource "google_service_account" "workload" {
  account_id   = "diary-platform"
  display_name = "Spoken-diary platform workloads (Dagster runs, sensors, webserver)"

  depends_on = [google_project_service.enabled]
}

resource "google_service_account_iam_member" "workload_identity" {
  service_account_id = google_service_account.workload.name
  role               = "roles/iam.workloadIdentityUser"
  member             = local.workload_identity_member

  # The identity pool exists once the cluster does.
  depends_on = [google_container_cluster.diary]
}

# Read, write and delete the platform's objects.
resource "google_storage_bucket_iam_member" "workload_data" {
  bucket = google_storage_bucket.data.name
  role   = "roles/storage.objectAdmin"
  member = google_service_account.workload.member
}

# The storage job reads the data bucket's lifecycle rules (storage.buckets.get), which objectAdmin lacks.
resource "google_storage_bucket_iam_member" "workload_data_bucket_reader" {
  bucket = google_storage_bucket.data.name
  role   = "roles/storage.legacyBucketReader"
  member = google_service_account.workload.member
}

# Uploads are read (the code location's read-only GCS FUSE mount): the platform never deletes landing files.
resource "google_storage_bucket_iam_member" "workload_landing" {
  bucket = google_storage_bucket.landing.name
  role   = "roles/storage.objectViewer"
  member = google_service_account.workload.member
}

# The HTTP API (`diary serve`, DIARY_LANDING_URI) creates each upload there as one new object. objectCreator
# creates objects only: replacing an existing one needs storage.objects.delete, which it lacks, so the
# platform still never overwrites or deletes landing files.
resource "google_storage_bucket_iam_member" "workload_landing_creator" {
  bucket = google_storage_bucket.landing.name
  role   = "roles/storage.objectCreator"
  member = google_service_account.workload.member
}

resource "google_secret_manager_secret_iam_member" "workload" {
  for_each = google_secret_manager_secret.platform

  secret_id = each.value.id
  role      = "roles/secretmanager.secretAccessor"
  member    = google_service_account.workload.member
}

locals {
  workload_project_roles = [
    "roles/cloudsql.client",         # the Cloud SQL Auth Proxy / connectors, if used instead of the private IP
    "roles/cloudtrace.agent",        # the OpenTelemetry Collector's googlecloud exporter: traces...
    "roles/monitoring.metricWriter", # ...and metrics
  ]
}

resource "google_project_iam_member" "workload" {
  for_each = toset(local.workload_project_roles)

  project = var.project_id
  role    = each.value
  member  = google_service_account.workload.member
}
