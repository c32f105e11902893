# Uploads arrive here (mounted into the pods through the GCS FUSE CSI driver, read-only); the platform
# reads them and never deletes them.
resource "google_storage_bucket" "landing" {
  name                        = local.landing_bucket
  location                    = var.region
  storage_class               = "STANDARD"
  uniform_bucket_level_access = true
  public_access_prevention    = "enforced"
  force_destroy               = false

  versioning {
    enabled = true
  }

  soft_delete_policy {
    retention_duration_seconds = var.soft_delete_retention_days * 86400
  }

  lifecycle_rule {
    condition {
      days_since_noncurrent_time = var.noncurrent_version_retention_days
    }
    action {
      type = "Delete"
    }
  }

  lifecycle_rule {
    condition {
      age = 7
    }
    action {
      type = "AbortIncompleteMultipartUpload"
    }
  }

  logging {
    log_bucket        = google_storage_bucket.access_logs.name
    log_object_prefix = "landing/"
  }
}

# Everything the platform writes under gs://<data bucket>/diary: originals, normalised audio, tables,
# transcripts, notes. An object's tier is its storage class (STANDARD = hot, NEARLINE = warm,
# COLDLINE/ARCHIVE = cold), which these rules change by age since the object was written.
resource "google_storage_bucket" "data" {
  name                        = local.data_bucket
  location                    = var.region
  storage_class               = "STANDARD"
  uniform_bucket_level_access = true
  public_access_prevention    = "enforced"
  force_destroy               = false

  # Tables and notes are rewritten in place; the previous generation stays restorable for a while.
  versioning {
    enabled = true
  }

  soft_delete_policy {
    retention_duration_seconds = var.soft_delete_retention_days * 86400
  }

  lifecycle_rule {
    condition {
      age                   = var.warm_after_days
      with_state            = "LIVE"
      matches_storage_class = ["STANDARD"]
    }
    action {
      type          = "SetStorageClass"
      storage_class = "NEARLINE"
    }
  }

  lifecycle_rule {
    condition {
      age                   = var.cold_after_days
      with_state            = "LIVE"
      matches_storage_class = ["STANDARD", "NEARLINE"]
    }
    action {
      type          = "SetStorageClass"
      storage_class = "COLDLINE"
    }
  }

  lifecycle_rule {
    condition {
      age                   = var.archive_after_days
      with_state            = "LIVE"
      matches_storage_class = ["STANDARD", "NEARLINE", "COLDLINE"]
    }
    action {
      type          = "SetStorageClass"
      storage_class = "ARCHIVE"
    }
  }

  lifecycle_rule {
    condition {
      days_since_noncurrent_time = var.noncurrent_version_retention_days
    }
    action {
      type = "Delete"
    }
  }

  lifecycle_rule {
    condition {
      age = 7
    }
    action {
      type = "AbortIncompleteMultipartUpload"
    }
  }

  logging {
    log_bucket        = google_storage_bucket.access_logs.name
    log_object_prefix = "data/"
  }

  lifecycle {
    precondition {
      condition     = var.warm_after_days < var.cold_after_days && var.cold_after_days < var.archive_after_days
      error_message = "The tiers must get colder with age: warm_after_days < cold_after_days < archive_after_days."
    }
  }
}

# Usage and storage logs of the two buckets above (hourly CSV files written by Cloud Storage).
resource "google_storage_bucket" "access_logs" {
  # checkov:skip=CKV_GCP_62: this is the access-log bucket itself: its own usage logs would need yet another bucket (CKV_GCP_63 forbids logging to itself), and only Cloud Storage's log delivery writes here.
  name                        = local.access_log_bucket
  location                    = var.region
  storage_class               = "STANDARD"
  uniform_bucket_level_access = true
  public_access_prevention    = "enforced"
  force_destroy               = false

  versioning {
    enabled = true
  }

  lifecycle_rule {
    condition {
      age = var.access_log_retention_days
    }
    action {
      type = "Delete"
    }
  }

  lifecycle_rule {
    condition {
      days_since_noncurrent_time = 1
    }
    action {
      type = "Delete"
    }
  }
}

# Cloud Storage writes the usage logs as this Google-owned group.
resource "google_storage_bucket_iam_member" "access_logs_writer" {
  bucket = google_storage_bucket.access_logs.name
  role   = "roles/storage.objectCreator"
  member = "group:cloud-storage-analytics@google.com"
}
