terraform {
  # 1.5: `check` blocks and the lifecycle preconditions used here; nothing newer is needed.
  required_version = ">= 1.5"

  required_providers {
    google = {
      source  = "hashicorp/google"
      version = "~> 6.10"
    }
    google-beta = {
      source  = "hashicorp/google-beta"
      version = "~> 6.10"
    }
    random = {
      source  = "hashicorp/random"
      version = "~> 3.6"
    }
  }

  # State holds the generated Postgres password: keep it in a private, versioned bucket, never on a laptop.
  # Partial configuration: `terraform init -backend-config="bucket=<state bucket>" -backend-config="prefix=diary"`.
  backend "gcs" {}
}

provider "google" {
  project               = var.project_id
  region                = var.region
  default_labels        = local.labels
  user_project_override = true
  billing_project       = var.project_id
}

# Declared with the same settings so that a beta-only field can be switched on per resource
# (`provider = google-beta`) without re-initialising; nothing here needs it today.
provider "google-beta" {
  project               = var.project_id
  region                = var.region
  default_labels        = local.labels
  user_project_override = true
  billing_project       = var.project_id
}
