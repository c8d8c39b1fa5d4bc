output "functions" {
  description = "Each topology function: deployed name, URI, service account and how events reach it."
  value = {
    for name, fn in local.functions : name => {
      name            = google_cloudfunctions2_function.this[name].name
      uri             = google_cloudfunctions2_function.this[name].service_config[0].uri
      service_account = google_service_account.function[name].email
      delivery        = fn.delivery
      subscription    = try(google_pubsub_subscription.push[name].id, null)
      eventarc        = try(google_cloudfunctions2_function.this[name].event_trigger[0].trigger, null)
    }
  }
}

output "buckets" {
  description = "Real names of the landing, artifacts and function-source buckets."
  value = {
    landing          = google_storage_bucket.landing.name
    artifacts        = google_storage_bucket.artifacts.name
    function_sources = google_storage_bucket.function_sources.name
  }
}

output "topics" {
  description = "Logical topic name -> full topic id."
  value       = { for topic, resource in google_pubsub_topic.this : topic => resource.id }
}

output "runtime_environment" {
  description = "The CASCADE_* settings shared by every function: export them to run `cascade verify-deployment` or the CLI against this deployment."
  value       = local.common_environment
}

output "vertex_jobs_service_account" {
  description = "Service account that Vertex AI training and tuning jobs run as."
  value       = google_service_account.vertex_jobs.email
}

output "invoker_service_account" {
  description = "Service account that push subscriptions and Eventarc use to call the event functions."
  value       = google_service_account.invoker.email
}

output "trainer_image" {
  description = "Trainer image the train function submits to Vertex AI."
  value       = local.trainer_image
}

output "image_repository" {
  description = "Artifact Registry repository for the trainer image."
  value       = "${var.region}-docker.pkg.dev/${var.project_id}/${google_artifact_registry_repository.images.repository_id}"
}
