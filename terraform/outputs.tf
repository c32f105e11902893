# What the Helm values and the platform's environment need.

output "cluster_name" {
  description = "GKE cluster name (`gcloud container clusters get-credentials <name> --region <location>`)."
  value       = google_container_cluster.diary.name
}

output "cluster_location" {
  description = "Region of the (regional) GKE cluster."
  value       = google_container_cluster.diary.location
}

output "data_bucket_uri" {
  description = "DIARY_STORAGE_URI: where the platform keeps originals, normalised audio, tables, transcripts and notes."
  value       = "gs://${google_storage_bucket.data.name}/${local.data_prefix}"
}

output "data_bucket_name" {
  description = "Name of the data bucket."
  value       = google_storage_bucket.data.name
}

output "landing_bucket_name" {
  description = "Bucket that receives uploads; mount it read-only with the GCS FUSE CSI driver as the landing folder."
  value       = google_storage_bucket.landing.name
}

output "access_log_bucket_name" {
  description = "Bucket holding the usage and storage logs of the landing and data buckets."
  value       = google_storage_bucket.access_logs.name
}

output "gcs_project" {
  description = "DIARY_GCS_PROJECT."
  value       = var.project_id
}

output "sql_private_ip" {
  description = "DAGSTER_PG_HOST: the Cloud SQL instance's private IP, reachable from the VPC only (TLS required)."
  value       = google_sql_database_instance.dagster.private_ip_address
}

output "sql_connection_name" {
  description = "Instance connection name for the Cloud SQL Auth Proxy or connectors (project:region:instance)."
  value       = google_sql_database_instance.dagster.connection_name
}

output "sql_database" {
  description = "DAGSTER_PG_DB."
  value       = google_sql_database.dagster.name
}

output "sql_user" {
  description = "DAGSTER_PG_USER (the password is the secret dagster-pg-password)."
  value       = google_sql_user.dagster.name
}

output "workload_service_account_email" {
  description = "Annotate the Kubernetes service account with iam.gke.io/gcp-service-account=<this>."
  value       = google_service_account.workload.email
}

output "k8s_namespace" {
  description = "Namespace that workload identity trusts."
  value       = var.k8s_namespace
}

output "k8s_service_account" {
  description = "Kubernetes service account that workload identity trusts."
  value       = var.k8s_service_account
}

output "artifact_registry_url" {
  description = "Docker repository; push diary-platform and diary-platform-gpu here."
  value       = "${google_artifact_registry_repository.diary.location}-docker.pkg.dev/${var.project_id}/${google_artifact_registry_repository.diary.repository_id}"
}

output "images" {
  description = "Image names (without tags) of the CPU and GPU images."
  value = {
    cpu = "${google_artifact_registry_repository.diary.location}-docker.pkg.dev/${var.project_id}/${google_artifact_registry_repository.diary.repository_id}/diary-platform"
    gpu = "${google_artifact_registry_repository.diary.location}-docker.pkg.dev/${var.project_id}/${google_artifact_registry_repository.diary.repository_id}/diary-platform-gpu"
  }
}

output "secret_ids" {
  description = "Secret Manager secret ids (short names) of the LLM keys and the Postgres password."
  value       = { for key, secret in google_secret_manager_secret.platform : key => secret.secret_id }
}

output "secret_names" {
  description = "Full resource names (projects/<number>/secrets/<id>) of the same secrets."
  value       = { for key, secret in google_secret_manager_secret.platform : key => secret.name }
}

output "gpu_node_selector" {
  description = "Node selector and toleration of the GPU pool, as the transcription step's pods need them."
  value = {
    node_selector = { "cloud.google.com/gke-accelerator" = var.gpu_type }
    toleration    = { key = "nvidia.com/gpu", operator = "Equal", value = "present", effect = "NoSchedule" }
  }
}
