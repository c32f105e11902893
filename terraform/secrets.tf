# Secret Manager secrets the platform reads. The LLM keys have no versions here: add their values out of band
# (`gcloud secrets versions add openai-api-key --data-file=-`), so that they never enter code or state.
locals {
  secret_ids = {
    openai    = "openai-api-key"
    anthropic = "anthropic-api-key"
    dagster   = "dagster-pg-password"
  }
}

resource "google_secret_manager_secret" "platform" {
  for_each = local.secret_ids

  secret_id = each.value

  # Kept in the platform's region, like the data.
  replication {
    user_managed {
      replicas {
        location = var.region
      }
    }
  }

  depends_on = [google_project_service.enabled]
}

resource "google_secret_manager_secret_version" "dagster_pg_password" {
  secret      = google_secret_manager_secret.platform["dagster"].id
  secret_data = random_password.dagster_pg.result
}
