# ---------------------------------------------------------------------------------------------------------
# Project and location
# ---------------------------------------------------------------------------------------------------------

variable "project_id" {
  description = "Google Cloud project that holds everything; also the prefix of the bucket names."
  type        = string

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{4,28}[a-z0-9]$", var.project_id))
    error_message = "project_id must be a Google Cloud project id (6-30 lowercase letters, digits and hyphens)."
  }
}

variable "region" {
  description = "Region of the cluster, subnet, Cloud SQL, buckets, registry and secret replicas."
  type        = string
  default     = "europe-west4"
}

variable "zones" {
  description = "Zones of the region that run nodes. Each must offer gpu_type (`gcloud compute accelerator-types list --filter=zone:<region>`)."
  type        = list(string)
  default     = ["europe-west4-a", "europe-west4-b", "europe-west4-c"]

  validation {
    condition     = length(var.zones) > 0
    error_message = "Give at least one zone."
  }
}

variable "labels" {
  description = "Labels added to every resource that takes labels (merged over app and managed-by)."
  type        = map(string)
  default     = {}
}

# ---------------------------------------------------------------------------------------------------------
# Network
# ---------------------------------------------------------------------------------------------------------

variable "subnet_cidr" {
  description = "Primary range of the nodes' subnet."
  type        = string
  default     = "10.10.0.0/20"
}

variable "pods_cidr" {
  description = "Secondary range for pod IPs (VPC-native cluster)."
  type        = string
  default     = "10.16.0.0/14"
}

variable "services_cidr" {
  description = "Secondary range for Kubernetes Service IPs."
  type        = string
  default     = "10.20.0.0/20"
}

variable "master_ipv4_cidr_block" {
  description = "The /28 the GKE control plane uses inside the VPC (private cluster)."
  type        = string
  default     = "172.16.0.0/28"
}

variable "master_authorized_networks" {
  description = "CIDR blocks allowed to reach the control plane's endpoint (e.g. an office or a CI runner's range). Empty: only the VPC can."
  type = list(object({
    cidr_block   = string
    display_name = string
  }))
  default = []

  validation {
    condition     = alltrue([for network in var.master_authorized_networks : network.cidr_block != "0.0.0.0/0"])
    error_message = "0.0.0.0/0 would make the control plane public; list specific ranges."
  }
}

variable "enable_private_endpoint" {
  description = "Serve the control plane on its private IP only (reach it through a bastion, VPN or Connect gateway)."
  type        = bool
  default     = false
}

# ---------------------------------------------------------------------------------------------------------
# GKE
# ---------------------------------------------------------------------------------------------------------

variable "cluster_name" {
  description = "Name of the GKE cluster; also the prefix of the network, the Cloud SQL instance and the node service account."
  type        = string
  default     = "diary"

  validation {
    # The node service account's id, "<cluster_name>-nodes", may have at most 30 characters.
    condition     = can(regex("^[a-z]([a-z0-9-]{0,22}[a-z0-9])?$", var.cluster_name))
    error_message = "cluster_name must be 1-24 lowercase letters, digits or hyphens, starting with a letter."
  }
}

variable "cpu_machine_type" {
  description = "Machine type of the `cpu` pool: Dagster webserver, daemon, sensors and the CPU steps."
  type        = string
  default     = "e2-standard-4"
}

variable "cpu_min_nodes" {
  description = "Fewest nodes of the `cpu` pool, over all zones."
  type        = number
  default     = 1

  validation {
    condition     = var.cpu_min_nodes >= 0
    error_message = "cpu_min_nodes cannot be negative."
  }
}

variable "cpu_max_nodes" {
  description = "Most nodes of the `cpu` pool, over all zones."
  type        = number
  default     = 6

  validation {
    condition     = var.cpu_max_nodes >= 1
    error_message = "cpu_max_nodes must be at least 1."
  }
}

variable "gpu_type" {
  description = "Accelerator of the `gpu` pool. Pods select it with the label cloud.google.com/gke-accelerator=<gpu_type>."
  type        = string
  default     = "nvidia-l4"

  validation {
    condition     = contains(["nvidia-l4", "nvidia-tesla-t4"], var.gpu_type)
    error_message = "gpu_type must be \"nvidia-l4\" or \"nvidia-tesla-t4\"."
  }
}

variable "gpu_machine_type" {
  description = "Machine type of the `gpu` pool: a g2-* type for nvidia-l4, an n1-* type (e.g. n1-standard-8) for nvidia-tesla-t4."
  type        = string
  default     = "g2-standard-8"
}

variable "gpu_max_nodes" {
  description = "Most GPU nodes (one GPU each) over all zones; the pool scales from zero."
  type        = number
  default     = 4

  validation {
    condition     = var.gpu_max_nodes >= 1
    error_message = "gpu_max_nodes must be at least 1."
  }
}

variable "gpu_spot" {
  description = "Run the GPU nodes as Spot VMs (much cheaper, can be pre-empted; Dagster retries the step)."
  type        = bool
  default     = true
}

variable "node_disk_size_gb" {
  description = "Boot disk of every node; holds the container images (the GPU image carries CUDA libraries)."
  type        = number
  default     = 100
}

# ---------------------------------------------------------------------------------------------------------
# Storage
# ---------------------------------------------------------------------------------------------------------

variable "warm_after_days" {
  description = "Age at which the data bucket's lifecycle moves an object to NEARLINE (the platform's `warm` tier)."
  type        = number
  default     = 30

  validation {
    condition     = var.warm_after_days >= 1
    error_message = "warm_after_days must be at least 1."
  }
}

variable "cold_after_days" {
  description = "Age at which an object moves to COLDLINE (`cold`). Must be more than warm_after_days."
  type        = number
  default     = 180
}

variable "archive_after_days" {
  description = "Age at which an object moves to ARCHIVE (still `cold` to the platform). Must be more than cold_after_days."
  type        = number
  default     = 365
}

variable "noncurrent_version_retention_days" {
  description = "Days an overwritten or deleted object's older generation is kept in the versioned buckets before lifecycle deletes it."
  type        = number
  default     = 30

  validation {
    condition     = var.noncurrent_version_retention_days >= 1
    error_message = "noncurrent_version_retention_days must be at least 1."
  }
}

variable "soft_delete_retention_days" {
  description = "Days a deleted object (any generation) can still be restored (GCS soft delete): 0 turns it off, otherwise 7 to 90."
  type        = number
  default     = 7

  validation {
    condition     = var.soft_delete_retention_days == 0 || (var.soft_delete_retention_days >= 7 && var.soft_delete_retention_days <= 90)
    error_message = "soft_delete_retention_days must be 0 or between 7 and 90."
  }
}

variable "access_log_retention_days" {
  description = "Days the buckets' usage and storage logs are kept."
  type        = number
  default     = 90
}

# ---------------------------------------------------------------------------------------------------------
# Cloud SQL
# ---------------------------------------------------------------------------------------------------------

variable "db_tier" {
  description = "Cloud SQL machine tier of the Dagster instance database."
  type        = string
  default     = "db-custom-2-7680"
}

variable "db_availability_type" {
  description = "REGIONAL (a standby in a second zone, automatic failover) or ZONAL (half the price, no failover)."
  type        = string
  default     = "REGIONAL"

  validation {
    condition     = contains(["REGIONAL", "ZONAL"], var.db_availability_type)
    error_message = "db_availability_type must be REGIONAL or ZONAL."
  }
}

variable "db_disk_size_gb" {
  description = "Initial SSD size of the database; it grows automatically."
  type        = number
  default     = 20
}

# ---------------------------------------------------------------------------------------------------------
# Workloads
# ---------------------------------------------------------------------------------------------------------

variable "k8s_namespace" {
  description = "Kubernetes namespace the platform's Helm release runs in."
  type        = string
  default     = "diary"
}

variable "k8s_service_account" {
  description = "Kubernetes service account of the platform's pods; workload identity maps it to the diary-platform GSA."
  type        = string
  default     = "diary-platform"
}
