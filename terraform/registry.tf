# Images: <region>-docker.pkg.dev/<project>/diary/diary-platform and .../diary-platform-gpu.
resource "google_artifact_registry_repository" "diary" {
  # checkov:skip=CKV_GCP_84: the images hold the platform's code and public model weights, no user data; Google-managed encryption at rest is enough, and a customer-managed key would add a KMS key and its service-agent grants to run.
  repository_id = "diary"
  location      = var.region
  format        = "DOCKER"
  description   = "Container images of the spoken-diary platform (CPU and GPU)."

  # Deploy by version tag or digest; a tag, once pushed, always means the same image.
  docker_config {
    immutable_tags = true
  }

  cleanup_policy_dry_run = false

  cleanup_policies {
    id     = "delete-untagged"
    action = "DELETE"
    condition {
      tag_state  = "UNTAGGED"
      older_than = "604800s" # 7 days
    }
  }

  cleanup_policies {
    id     = "keep-recent"
    action = "KEEP"
    most_recent_versions {
      keep_count = 20
    }
  }

  depends_on = [google_project_service.enabled]
}
