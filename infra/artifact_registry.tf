# Container images: the trainer image that Vertex AI jobs run (pushed by CI), and the
# images Cloud Build makes of the functions.

resource "google_artifact_registry_repository" "images" {
  repository_id = "${var.name_prefix}images"
  location      = var.region
  format        = "DOCKER"
  description   = "Cascade trainer and function images."
  kms_key_name  = var.kms_key_name

  cleanup_policies {
    id     = "keep-recent-versions"
    action = "KEEP"
    most_recent_versions {
      keep_count = 20
    }
  }

  cleanup_policies {
    id     = "delete-old-untagged"
    action = "DELETE"
    condition {
      tag_state  = "UNTAGGED"
      older_than = "2592000s"
    }
  }
}
