# The console's variables (infra/console.tf). In a file of their own: tests/infra reads
# every variable file as declarations only.

variable "deploy_approvers" {
  description = "IAM members (user:, serviceAccount:, domain:) who may roll back or promote a serving version from the console. Null (the default) means bless_http_invokers: a rollback or promote decides what serves, as a force-bless does, so the same people decide unless this sets others. Public members are refused."
  type        = list(string)
  default     = null

  validation {
    condition     = var.deploy_approvers == null || alltrue([for member in coalesce(var.deploy_approvers, []) : !can(regex("^all(Users|AuthenticatedUsers)$", member))])
    error_message = "deploy_approvers must not contain public principals."
  }
}

variable "console_viewers" {
  description = "IAM members who may open the console (read runs, reports, models) without any action role. The members of train_http_invokers, bless_http_invokers, review_http_invokers and deploy_approvers may open it too. Public members are refused."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for member in var.console_viewers : !can(regex("^all(Users|AuthenticatedUsers)$", member))])
    error_message = "console_viewers must not contain public principals."
  }
}

variable "console_image" {
  description = "Container image of the console (python -m cascade.console.cloudrun, shared/Dockerfile.console). Null means <region>-docker.pkg.dev/<project>/<name_prefix>images/console:latest in the repository this configuration creates; CI passes the digest it pushed."
  type        = string
  default     = null
}

variable "console_hosts" {
  description = "Host names the console answers besides its run.app address (<service>-<project number>.<region>.run.app), e.g. a custom domain. Any other Host header is refused (400)."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for host in var.console_hosts : can(regex("^[A-Za-z0-9.-]{1,253}$", host))])
    error_message = "console_hosts are host names (letters, digits, dots and hyphens)."
  }
}

variable "console_iap_audience" {
  description = "The aud the console expects in IAP's signed header. Null means /projects/<project number>/locations/<region>/services/<service>, the audience of IAP enabled on a Cloud Run service."
  type        = string
  default     = null
}

variable "console_max_instances" {
  description = "Most instances of the console service."
  type        = number
  default     = 2

  validation {
    condition     = var.console_max_instances >= 1 && var.console_max_instances <= 20
    error_message = "console_max_instances is between 1 and 20."
  }
}
