# The Dagster instance's database (runs, event logs, schedules, pool limits): deploy/dagster.yaml reads
# DAGSTER_PG_HOST / _DB / _USER / _PASSWORD, which come from the outputs and the dagster-pg-password secret.
resource "google_sql_database_instance" "dagster" {
  # checkov:skip=CKV_GCP_79: Postgres 15 is the major version the platform's instance tests run against (diary_platform_tests/test_postgres_instance.py, on a local Postgres 15); a major upgrade is a planned migration, not a setting.
  # checkov:skip=CKV_GCP_108: log_hostname does a reverse DNS lookup on every connection; clients are pod IPs without reverse DNS, and log_connections already records their addresses.
  # checkov:skip=CKV_GCP_6: TLS is required (ssl_mode ENCRYPTED_ONLY); client certificates as well would mean issuing certs to, or an Auth Proxy sidecar in, every Dagster run pod, and the instance is reachable from the VPC only.
  # checkov:skip=CKV2_GCP_13: log_duration writes a line for every statement and Dagster's daemon issues many small queries a second; Query Insights (enabled below) records latency per query shape instead.
  name             = "${var.cluster_name}-dagster"
  database_version = "POSTGRES_15"
  region           = var.region

  deletion_protection = true

  settings {
    tier                        = var.db_tier
    edition                     = "ENTERPRISE"
    availability_type           = var.db_availability_type
    disk_type                   = "PD_SSD"
    disk_size                   = var.db_disk_size_gb
    disk_autoresize             = true
    deletion_protection_enabled = true
    user_labels                 = local.labels

    ip_configuration {
      ipv4_enabled                                  = false
      private_network                               = google_compute_network.diary.id
      enable_private_path_for_google_cloud_services = true
      ssl_mode                                      = "ENCRYPTED_ONLY"
    }

    backup_configuration {
      enabled                        = true
      point_in_time_recovery_enabled = true
      start_time                     = "01:00" # UTC, before the 02:00 storage job
      transaction_log_retention_days = 7
      backup_retention_settings {
        retained_backups = 14
        retention_unit   = "COUNT"
      }
    }

    maintenance_window {
      day          = 7 # Sunday
      hour         = 3 # UTC
      update_track = "stable"
    }

    insights_config {
      query_insights_enabled  = true
      record_application_tags = false
      record_client_address   = false
    }

    database_flags {
      name  = "log_checkpoints"
      value = "on"
    }
    database_flags {
      name  = "log_connections"
      value = "on"
    }
    database_flags {
      name  = "log_disconnections"
      value = "on"
    }
    database_flags {
      name  = "log_lock_waits"
      value = "on"
    }
    database_flags {
      name  = "log_min_messages"
      value = "warning"
    }
    database_flags {
      name  = "log_min_error_statement"
      value = "error"
    }
    database_flags {
      name  = "log_temp_files"
      value = "0"
    }
    database_flags {
      name  = "log_min_duration_statement"
      value = "-1"
    }
    database_flags {
      name  = "log_statement"
      value = "ddl"
    }
    # pgAudit also needs `CREATE EXTENSION pgaudit;` in the database once (see README).
    database_flags {
      name  = "cloudsql.enable_pgaudit"
      value = "on"
    }
    database_flags {
      name  = "pgaudit.log"
      value = "role,ddl"
    }
  }

  depends_on = [google_service_networking_connection.private_services]
}

resource "google_sql_database" "dagster" {
  name     = "dagster"
  instance = google_sql_database_instance.dagster.name
}

resource "random_password" "dagster_pg" {
  length  = 40
  special = false # it travels in connection URLs; 40 alphanumerics are ~238 bits
}

resource "google_sql_user" "dagster" {
  name     = "dagster"
  instance = google_sql_database_instance.dagster.name
  password = random_password.dagster_pg.result

  # Postgres refuses to drop a role that owns objects; leave the user with the instance.
  deletion_policy = "ABANDON"
}
