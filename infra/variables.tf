variable "project_id" {
  description = "Google Cloud project that hosts the whole pipeline."
  type        = string

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{4,28}[a-z0-9]$", var.project_id))
    error_message = "project_id must be a valid Google Cloud project id."
  }
}

variable "region" {
  description = "Region of the functions, buckets, Vertex AI jobs and Eventarc triggers. The landing bucket must be in this region for its Eventarc trigger."
  type        = string
  default     = "us-central1"
}

variable "name_prefix" {
  description = "Prefix of every function, topic, subscription and service account id. It is also CASCADE_TOPIC_PREFIX, so topic ids are <name_prefix><logical topic>. Short, because service account ids are <name_prefix><function> and may have at most 30 characters."
  type        = string
  default     = "cascade-"

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{0,9}$", var.name_prefix))
    error_message = "name_prefix must be 1-10 characters of lowercase letters, digits and hyphens, starting with a letter."
  }
}

variable "topology_path" {
  description = "The trigger topology: which function listens to what, with its retry policy, timeout and memory. Defaults to infra/topology.yaml, the file the local cloud reads too."
  type        = string
  default     = null
}

variable "function_packages_manifest" {
  description = "manifest.json written by `cascade package-functions`: for each function the content-hashed source zip. Defaults to <repo>/build/functions/manifest.json."
  type        = string
  default     = null
}

variable "bucket_names" {
  description = "Bucket names, when the defaults (<project_id>-<name_prefix><role>) do not suit. Bucket names are global."
  type = object({
    landing          = optional(string)
    artifacts        = optional(string)
    function_sources = optional(string)
  })
  default = {}
}

variable "bucket_location" {
  description = "Location of the landing and artifacts buckets. Defaults to var.region: the storage trigger of a 2nd-gen function must be in the bucket's region."
  type        = string
  default     = null
}

variable "lifecycle_rules" {
  description = "Object lifecycle: rejected files under quarantine/ are deleted after quarantine_days; run records under runs/ move to colder storage classes and are deleted after delete_runs_after_days (null keeps them: a served model lives under its run); noncurrent object versions are deleted after noncurrent_days."
  type = object({
    quarantine_days          = optional(number, 30)
    runs_nearline_after_days = optional(number, 30)
    runs_coldline_after_days = optional(number, 180)
    delete_runs_after_days   = optional(number)
    noncurrent_days          = optional(number, 14)
    function_sources_days    = optional(number, 90)
  })
  default = {}

  validation {
    condition     = var.lifecycle_rules.runs_coldline_after_days > var.lifecycle_rules.runs_nearline_after_days
    error_message = "runs_coldline_after_days must be later than runs_nearline_after_days."
  }
}

variable "kms_key_name" {
  description = "Optional Cloud KMS key (projects/.../cryptoKeys/...) that encrypts the buckets and topics (CMEK). Null uses Google-managed keys. The key must be in a location compatible with the buckets."
  type        = string
  default     = null

  validation {
    condition     = var.kms_key_name == null || can(regex("^projects/[^/]+/locations/[^/]+/keyRings/[^/]+/cryptoKeys/[^/]+$", var.kms_key_name))
    error_message = "kms_key_name must be a full crypto key resource name."
  }
}

variable "train_http_invokers" {
  description = "IAM members (user:, group:, serviceAccount:) allowed to call the train-http function (POST a retrain request). Public members are refused."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for member in var.train_http_invokers : !can(regex("^all(Users|AuthenticatedUsers)$", member))])
    error_message = "train_http_invokers must not contain public principals."
  }
}

variable "bless_http_invokers" {
  description = "IAM members (user:, group:, serviceAccount:) allowed to call the evaluate-http function, the audited force-bless override. Kept apart from train_http_invokers: retraining is routine, overriding the evaluation is not. Public members are refused."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for member in var.bless_http_invokers : !can(regex("^all(Users|AuthenticatedUsers)$", member))])
    error_message = "bless_http_invokers must not contain public principals."
  }
}

variable "review_http_invokers" {
  description = "IAM members (user:, group:, serviceAccount:) allowed to call the review-http function: release a quarantined file into training or discard it (audited like force-bless). Kept apart from the retrain and bless callers: whoever reviews quarantined data decides what the model learns from. Public members are refused."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for member in var.review_http_invokers : !can(regex("^all(Users|AuthenticatedUsers)$", member))])
    error_message = "review_http_invokers must not contain public principals."
  }
}

variable "stream_publishers" {
  description = "Producers of each streamed dataset (topology `streams`): dataset => IAM members (user:, group:, serviceAccount:) granted roles/pubsub.publisher on that dataset's ingestion topic only. A dataset not named here has no publisher; a dataset without a stream fails the plan. Public members are refused."
  type        = map(list(string))
  default     = {}

  validation {
    condition     = alltrue([for members in values(var.stream_publishers) : alltrue([for member in members : !can(regex("^all(Users|AuthenticatedUsers)$", member))])])
    error_message = "stream_publishers must not contain public principals."
  }
}

variable "endpoint_service_account" {
  description = "Email of the service account Vertex AI endpoint models run as (the deployment config's endpoint_service_account), if any. The deploy function gets roles/iam.serviceAccountUser on it, which deploying a model with a service account requires. Null: models run as Vertex AI's default and deploy acts as nobody."
  type        = string
  default     = null

  validation {
    condition     = var.endpoint_service_account == null || can(regex("^[^@]+@[^@]+\\.iam\\.gserviceaccount\\.com$", var.endpoint_service_account))
    error_message = "endpoint_service_account must be a service account email."
  }
}

variable "http_ingress" {
  description = "Ingress of HTTP-triggered functions. Callers still need roles/run.invoker; ALLOW_INTERNAL_ONLY additionally keeps them inside the VPC / project."
  type        = string
  default     = "ALLOW_ALL"

  validation {
    condition     = contains(["ALLOW_ALL", "ALLOW_INTERNAL_ONLY", "ALLOW_INTERNAL_AND_GCLB"], var.http_ingress)
    error_message = "http_ingress must be ALLOW_ALL, ALLOW_INTERNAL_ONLY or ALLOW_INTERNAL_AND_GCLB."
  }
}

variable "trainer_image" {
  description = "Container image of the trainer (python -m cascade.trainer.task) that Vertex AI jobs run. Null means <region>-docker.pkg.dev/<project>/<name_prefix>images/trainer:latest in the repository this configuration creates; CI passes the digest it pushed."
  type        = string
  default     = null
}

variable "serving_image" {
  description = "Container image of the model server (python -m cascade.serving, shared/Dockerfile.serving) that Vertex AI endpoints run as a custom serving container. Null means <region>-docker.pkg.dev/<project>/<name_prefix>images/serving:latest in the repository this configuration creates; CI passes the digest it pushed."
  type        = string
  default     = null
}

variable "retrain_schedules" {
  description = "Periodic retraining: for each dataset, a Cloud Scheduler job that publishes a train request to the train-requests topic. Empty creates no scheduler job."
  type = map(object({
    schedule        = string
    time_zone       = optional(string, "Etc/UTC")
    tune            = optional(bool, false)
    hyperparameters = optional(map(string), {})
    paused          = optional(bool, false)
  }))
  default = {}

  validation {
    condition     = alltrue([for dataset in keys(var.retrain_schedules) : can(regex("^[a-z][a-z0-9_-]{0,62}$", dataset))])
    error_message = "retrain_schedules keys are dataset names: ^[a-z][a-z0-9_-]{0,62}$."
  }
}

variable "job_event_log_filter" {
  description = "Cloud Logging filter of the Vertex AI job entries that the log sink turns into messages on the job-events topic. Null uses the default in observability.tf."
  type        = string
  default     = null
}

variable "dead_letter_alert" {
  description = "Alert when events land in the dead-letter topic: threshold of undelivered dead letters, how long it must hold, and the notification channels (ids) to tell."
  type = object({
    enabled               = optional(bool, true)
    threshold             = optional(number, 0)
    duration_s            = optional(number, 60)
    notification_channels = optional(list(string), [])
  })
  default = {}
}

variable "review_retention" {
  description = "How long messages stay in the review subscriptions of the topics no function consumes (alerts, dead-letter). Pub/Sub allows at most 7 days."
  type        = string
  default     = "604800s"
}

variable "review_escalation_topic" {
  description = "Logical topic that receives a dead letter nacked max times in its review subscription."
  type        = string
  default     = "alerts"
}

variable "configure_eventarc_dead_letter" {
  description = "Attach the dead-letter topic and the topology's retry backoff to the Pub/Sub subscription that Eventarc creates for storage-triggered functions. Needs the gcloud CLI where terraform apply runs (see README.md, dead-letter design)."
  type        = bool
  default     = true
}

variable "labels" {
  description = "Labels added to every resource that takes labels."
  type        = map(string)
  default     = {}
}

variable "storage_data_access_logs" {
  description = "Turn on Cloud Audit Logs data-access logs (DATA_READ, DATA_WRITE) for Cloud Storage in the project: who read or wrote which object. This is authoritative for the storage.googleapis.com audit config of the project, so leave it off if that is managed elsewhere."
  type        = bool
  default     = true
}
