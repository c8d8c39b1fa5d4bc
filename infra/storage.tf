# Buckets: landing (every finalize starts a run), artifacts (run records, models; writing
# here triggers nothing) and function sources (content-hashed zips). All three enforce
# uniform bucket-level access and public access prevention, keep object versions, and
# optionally use a customer-managed key.

resource "google_storage_bucket" "landing" {
  name                        = local.bucket_names.landing
  location                    = local.bucket_location
  storage_class               = "STANDARD"
  uniform_bucket_level_access = true
  public_access_prevention    = "enforced"
  force_destroy               = false

  versioning {
    enabled = true
  }

  dynamic "encryption" {
    for_each = var.kms_key_name == null ? [] : [var.kms_key_name]
    content {
      default_kms_key_name = encryption.value
    }
  }

  # Rejected files are kept under quarantine/ for inspection, then deleted.
  lifecycle_rule {
    condition {
      age            = var.lifecycle_rules.quarantine_days
      matches_prefix = ["quarantine/"]
    }
    action {
      type = "Delete"
    }
  }

  lifecycle_rule {
    condition {
      days_since_noncurrent_time = var.lifecycle_rules.noncurrent_days
      with_state                 = "ARCHIVED"
    }
    action {
      type = "Delete"
    }
  }

  depends_on = [google_kms_crypto_key_iam_member.service_agents]
}

resource "google_storage_bucket" "artifacts" {
  name                        = local.bucket_names.artifacts
  location                    = local.bucket_location
  storage_class               = "STANDARD"
  uniform_bucket_level_access = true
  public_access_prevention    = "enforced"
  force_destroy               = false

  versioning {
    enabled = true
  }

  dynamic "encryption" {
    for_each = var.kms_key_name == null ? [] : [var.kms_key_name]
    content {
      default_kms_key_name = encryption.value
    }
  }

  lifecycle_rule {
    condition {
      age            = var.lifecycle_rules.quarantine_days
      matches_prefix = ["quarantine/"]
    }
    action {
      type = "Delete"
    }
  }

  # Old runs move to colder classes. A served model lives under its run, so runs are
  # deleted only when delete_runs_after_days is set.
  lifecycle_rule {
    condition {
      age                   = var.lifecycle_rules.runs_nearline_after_days
      matches_prefix        = ["runs/"]
      matches_storage_class = ["STANDARD"]
    }
    action {
      type          = "SetStorageClass"
      storage_class = "NEARLINE"
    }
  }

  lifecycle_rule {
    condition {
      age                   = var.lifecycle_rules.runs_coldline_after_days
      matches_prefix        = ["runs/"]
      matches_storage_class = ["NEARLINE"]
    }
    action {
      type          = "SetStorageClass"
      storage_class = "COLDLINE"
    }
  }

  dynamic "lifecycle_rule" {
    for_each = var.lifecycle_rules.delete_runs_after_days == null ? [] : [var.lifecycle_rules.delete_runs_after_days]
    content {
      condition {
        age            = lifecycle_rule.value
        matches_prefix = ["runs/"]
      }
      action {
        type = "Delete"
      }
    }
  }

  # Every optimistic update of a run record leaves a noncurrent version behind.
  lifecycle_rule {
    condition {
      days_since_noncurrent_time = var.lifecycle_rules.noncurrent_days
      with_state                 = "ARCHIVED"
    }
    action {
      type = "Delete"
    }
  }

  depends_on = [google_kms_crypto_key_iam_member.service_agents]
}

resource "google_storage_bucket" "function_sources" {
  name                        = local.bucket_names.function_sources
  location                    = var.region
  storage_class               = "STANDARD"
  uniform_bucket_level_access = true
  public_access_prevention    = "enforced"
  force_destroy               = false

  versioning {
    enabled = true
  }

  dynamic "encryption" {
    for_each = var.kms_key_name == null ? [] : [var.kms_key_name]
    content {
      default_kms_key_name = encryption.value
    }
  }

  # Zips of superseded code. A zip still in use is re-uploaded by the next apply.
  lifecycle_rule {
    condition {
      age = var.lifecycle_rules.function_sources_days
    }
    action {
      type = "Delete"
    }
  }

  lifecycle_rule {
    condition {
      days_since_noncurrent_time = var.lifecycle_rules.noncurrent_days
      with_state                 = "ARCHIVED"
    }
    action {
      type = "Delete"
    }
  }

  depends_on = [google_kms_crypto_key_iam_member.service_agents]
}

# One object per function, named by the zip's content hash: a code change is a new
# object name and so a new function revision; an unchanged zip changes nothing.
resource "google_storage_bucket_object" "function_source" {
  for_each = local.function_packages

  bucket       = google_storage_bucket.function_sources.name
  name         = "functions/${each.key}/${each.value.sha256}.zip"
  source       = "${dirname(local.packages_manifest_path)}/${each.value.zip}"
  content_type = "application/zip"
}

# Object access is recorded by Cloud Audit Logs rather than legacy bucket usage logs.
resource "google_project_iam_audit_config" "storage" {
  count = var.storage_data_access_logs ? 1 : 0

  project = var.project_id
  service = "storage.googleapis.com"

  audit_log_config {
    log_type = "DATA_READ"
  }

  audit_log_config {
    log_type = "DATA_WRITE"
  }
}
