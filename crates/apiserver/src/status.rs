//! API errors, rendered as the `Status` bodies upstream's API server writes.
//!
//! Field order, reasons and message texts match upstream byte for byte, because clients
//! (kubectl above all) print them to people and some match on them.

use axum::response::{IntoResponse, Response};
use http::StatusCode;
use serde_json::{json, Map, Value};

use crate::resources::ResourceInfo;

/// One reason a request was invalid, as in `Status.details.causes`.
#[derive(Debug, Clone, PartialEq)]
pub struct Cause {
    pub reason: &'static str,
    pub message: String,
    pub field: String,
}

/// The value a cause names, printed as upstream's `field.Error` prints it: strings
/// quoted, numbers bare, anything else in Go syntax (`%#v`), which the caller renders
/// (see `crate::validation::go`).
#[derive(Debug, Clone, PartialEq)]
pub enum BadValue {
    Text(String),
    Number(i64),
    Go(String),
}

impl BadValue {
    fn render(&self) -> String {
        match self {
            BadValue::Text(text) => quote(text),
            BadValue::Number(n) => n.to_string(),
            BadValue::Go(rendered) => rendered.clone(),
        }
    }
}

impl From<&str> for BadValue {
    fn from(value: &str) -> Self {
        BadValue::Text(value.to_string())
    }
}

impl From<&String> for BadValue {
    fn from(value: &String) -> Self {
        BadValue::Text(value.clone())
    }
}

impl From<String> for BadValue {
    fn from(value: String) -> Self {
        BadValue::Text(value)
    }
}

impl From<i64> for BadValue {
    fn from(value: i64) -> Self {
        BadValue::Number(value)
    }
}

impl Cause {
    pub fn required(field: impl Into<String>) -> Self {
        Cause {
            reason: "FieldValueRequired",
            message: "Required value".into(),
            field: field.into(),
        }
    }

    /// `required` with upstream's detail: `Required value: <detail>`.
    pub fn required_detail(field: impl Into<String>, detail: &str) -> Self {
        Cause {
            reason: "FieldValueRequired",
            message: format!("Required value: {detail}"),
            field: field.into(),
        }
    }

    pub fn invalid(field: impl Into<String>, value: impl Into<BadValue>, detail: &str) -> Self {
        let value = value.into().render();
        Cause {
            reason: "FieldValueInvalid",
            message: if detail.is_empty() {
                format!("Invalid value: {value}")
            } else {
                format!("Invalid value: {value}: {detail}")
            },
            field: field.into(),
        }
    }

    pub fn duplicate(field: impl Into<String>, value: impl Into<BadValue>) -> Self {
        Cause {
            reason: "FieldValueDuplicate",
            message: format!("Duplicate value: {}", value.into().render()),
            field: field.into(),
        }
    }

    /// A reference to something that is not there (a volume a mount names).
    pub fn not_found(field: impl Into<String>, value: impl Into<BadValue>) -> Self {
        Cause {
            reason: "FieldValueNotFound",
            message: format!("Not found: {}", value.into().render()),
            field: field.into(),
        }
    }

    pub fn forbidden(field: impl Into<String>, detail: &str) -> Self {
        Cause {
            reason: "FieldValueForbidden",
            message: format!("Forbidden: {detail}"),
            field: field.into(),
        }
    }

    pub fn unsupported(
        field: impl Into<String>,
        value: impl Into<BadValue>,
        supported: &[&str],
    ) -> Self {
        let list: Vec<String> = supported.iter().map(|s| quote(s)).collect();
        Cause {
            reason: "FieldValueNotSupported",
            message: format!(
                "Unsupported value: {}: supported values: {}",
                value.into().render(),
                list.join(", ")
            ),
            field: field.into(),
        }
    }

    /// The text of this cause inside an `Invalid` message: `field: message`.
    fn describe(&self) -> String {
        if self.field.is_empty() {
            self.message.clone()
        } else {
            format!("{}: {}", self.field, self.message)
        }
    }
}

/// Go's `%q` for the strings that appear in validation messages.
pub fn quote(value: &str) -> String {
    serde_json::to_string(value).unwrap_or_else(|_| format!("\"{value}\""))
}

/// An error that reaches a client as a `Status`.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub code: u16,
    pub reason: &'static str,
    pub message: String,
    /// Boxed: errors travel in every `Result`, and most have no details.
    pub details: Option<Box<Value>>,
    /// Extra headers, such as `Retry-After`.
    pub retry_after: Option<u64>,
    /// The `metadata.continue` of the `Status`: where an expired paginated list may go
    /// on from, inconsistently.
    pub list_continue: Option<String>,
}

pub type ApiResult<T> = Result<T, ApiError>;

/// How a resource is named in messages: `pods`, `deployments.apps`.
pub fn qualified(resource: &ResourceInfo) -> String {
    if resource.group.is_empty() {
        resource.plural.to_string()
    } else {
        format!("{}.{}", resource.plural, resource.group)
    }
}

fn name_details(resource: &ResourceInfo, name: &str) -> Value {
    let mut details = Map::new();
    details.insert("name".into(), json!(name));
    if !resource.group.is_empty() {
        details.insert("group".into(), json!(resource.group));
    }
    details.insert("kind".into(), json!(resource.plural));
    Value::Object(details)
}

impl ApiError {
    pub fn new(code: u16, reason: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            code,
            reason,
            message: message.into(),
            details: None,
            retry_after: None,
            list_continue: None,
        }
    }

    /// This error with `token` as its `Status`'s `metadata.continue`.
    pub fn with_continue(mut self, token: String) -> Self {
        self.list_continue = Some(token);
        self
    }

    pub(crate) fn with_details(mut self, details: Value) -> Self {
        self.details = Some(Box::new(details));
        self
    }

    pub fn not_found(resource: &ResourceInfo, name: &str) -> Self {
        ApiError::new(
            404,
            "NotFound",
            format!("{} {} not found", qualified(resource), quote(name)),
        )
        .with_details(name_details(resource, name))
    }

    pub fn namespace_not_found(namespace: &str) -> Self {
        ApiError::new(
            404,
            "NotFound",
            format!("namespaces {} not found", quote(namespace)),
        )
        .with_details(json!({"name": namespace, "kind": "namespaces"}))
    }

    pub fn namespace_terminating(namespace: &str) -> Self {
        ApiError::new(
            403,
            "Forbidden",
            format!(
                "unable to create new content in namespace {namespace} because it is being terminated"
            ),
        )
        .with_details(json!({
            "name": namespace,
            "kind": "namespaces",
            "causes": [{
                "reason": "NamespaceTerminating",
                "message": format!("namespace {namespace} is being terminated"),
                "field": "metadata.namespace"
            }]
        }))
    }

    /// An admission plugin refused the request (`pods "x" is forbidden: why`).
    pub fn admission_forbidden(resource: &ResourceInfo, name: &str, why: &str) -> Self {
        ApiError::new(
            403,
            "Forbidden",
            format!(
                "{} {} is forbidden: {why}",
                qualified(resource),
                quote(name)
            ),
        )
        .with_details(name_details(resource, name))
    }

    /// Admission policies refused the request (upstream's policy dispatcher): the first
    /// refusal is the message, every refusal a cause.
    pub fn policy_denied(
        resource: &ResourceInfo,
        name: &str,
        reason: &'static str,
        first: &str,
        all: &[String],
    ) -> Self {
        let mut details = name_details(resource, name);
        details["causes"] = all.iter().map(|m| json!({"message": m})).collect();
        ApiError::new(403, reason, first).with_details(details)
    }

    pub fn already_exists(resource: &ResourceInfo, name: &str) -> Self {
        ApiError::new(
            409,
            "AlreadyExists",
            format!("{} {} already exists", qualified(resource), quote(name)),
        )
        .with_details(name_details(resource, name))
    }

    pub fn conflict(resource: &ResourceInfo, name: &str, why: &str) -> Self {
        ApiError::new(
            409,
            "Conflict",
            format!(
                "Operation cannot be fulfilled on {} {}: {why}",
                qualified(resource),
                quote(name)
            ),
        )
        .with_details(name_details(resource, name))
    }

    /// A server-side apply that would take fields other managers own.
    pub fn apply_conflict(message: String, causes: Vec<Value>) -> Self {
        ApiError::new(409, "Conflict", message).with_details(json!({ "causes": causes }))
    }

    pub fn stale(resource: &ResourceInfo, name: &str) -> Self {
        ApiError::conflict(
            resource,
            name,
            "the object has been modified; please apply your changes to the latest version and try again",
        )
    }

    /// `422 Invalid` with the causes; the message lists them as upstream does.
    pub fn invalid(kind: &str, group: &str, name: &str, causes: Vec<Cause>) -> Self {
        let qualified_kind = if group.is_empty() {
            kind.to_string()
        } else {
            format!("{kind}.{group}")
        };
        let summary = match causes.as_slice() {
            [one] => one.describe(),
            many => format!(
                "[{}]",
                many.iter()
                    .map(Cause::describe)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        };
        let mut details = Map::new();
        details.insert("name".into(), json!(name));
        if !group.is_empty() {
            details.insert("group".into(), json!(group));
        }
        details.insert("kind".into(), json!(kind));
        details.insert(
            "causes".into(),
            Value::Array(
                causes
                    .iter()
                    .map(|c| json!({"reason": c.reason, "message": c.message, "field": c.field}))
                    .collect(),
            ),
        );
        ApiError::new(
            422,
            "Invalid",
            format!("{qualified_kind} {} is invalid: {summary}", quote(name)),
        )
        .with_details(Value::Object(details))
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        ApiError::new(400, "BadRequest", message)
    }

    pub fn method_not_allowed(message: impl Into<String>) -> Self {
        ApiError::new(405, "MethodNotAllowed", message)
    }

    /// `403 Forbidden` for a request the authorizer denied.
    pub fn forbidden(request: &crate::authz::Attributes, user: &crate::auth::UserInfo) -> Self {
        Self::forbidden_because(request, user, None)
    }

    /// [`ApiError::forbidden`] with the authorizer's reason appended, as upstream words it.
    pub fn forbidden_because(
        request: &crate::authz::Attributes,
        user: &crate::auth::UserInfo,
        reason: Option<&str>,
    ) -> Self {
        let mut details = Map::new();
        if request.resource_request {
            if !request.name.is_empty() {
                details.insert("name".into(), json!(request.name));
            }
            if !request.api_group.is_empty() {
                details.insert("group".into(), json!(request.api_group));
            }
            details.insert("kind".into(), json!(request.resource));
        }
        ApiError::new(
            403,
            "Forbidden",
            request.forbidden_message_because(user, reason),
        )
        .with_details(Value::Object(details))
    }

    pub fn unauthorized() -> Self {
        ApiError::new(401, "Unauthorized", "Unauthorized")
    }

    pub fn gone(message: impl Into<String>) -> Self {
        ApiError::new(410, "Expired", message)
    }

    pub fn unsupported_media_type(content_type: &str) -> Self {
        ApiError::new(
            415,
            "UnsupportedMediaType",
            format!("the body of the request was in an unknown format - accepted media types include: application/json, application/yaml, application/vnd.kubernetes.protobuf (got {content_type})"),
        )
    }

    pub fn not_acceptable() -> Self {
        ApiError::new(
            406,
            "NotAcceptable",
            "only the following media types are accepted: application/json, application/yaml, application/vnd.kubernetes.protobuf",
        )
    }

    /// The answer for a path that names nothing this server serves.
    pub fn no_route() -> Self {
        ApiError::new(
            404,
            "NotFound",
            "the server could not find the requested resource",
        )
        .with_details(json!({}))
    }

    pub fn internal(message: impl std::fmt::Display) -> Self {
        ApiError::new(
            500,
            "InternalError",
            format!("Internal error occurred: {message}"),
        )
        .with_details(json!({"causes": [{"message": message.to_string()}]}))
    }

    pub fn timeout(message: impl Into<String>) -> Self {
        ApiError::new(504, "Timeout", message)
    }

    /// The `Status` object, fields in upstream's order.
    pub fn to_status(&self) -> Value {
        let mut status = Map::new();
        status.insert("kind".into(), json!("Status"));
        status.insert("apiVersion".into(), json!("v1"));
        let metadata = match &self.list_continue {
            Some(token) => json!({"continue": token}),
            None => json!({}),
        };
        status.insert("metadata".into(), metadata);
        status.insert("status".into(), json!("Failure"));
        status.insert("message".into(), json!(self.message));
        // An error with no reason (upstream's `StatusReasonUnknown`) leaves the field out.
        if !self.reason.is_empty() {
            status.insert("reason".into(), json!(self.reason));
        }
        if let Some(details) = &self.details {
            status.insert("details".into(), (**details).clone());
        }
        status.insert("code".into(), json!(self.code));
        Value::Object(status)
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({}): {}", self.code, self.reason, self.message)
    }
}

impl std::error::Error for ApiError {}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body = serde_json::to_vec(&self.to_status()).unwrap_or_default();
        body.push(b'\n');
        let code = StatusCode::from_u16(self.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut response = (
            code,
            [(http::header::CONTENT_TYPE, "application/json")],
            body,
        )
            .into_response();
        if let Some(seconds) = self.retry_after {
            if let Ok(value) = http::HeaderValue::from_str(&seconds.to_string()) {
                response
                    .headers_mut()
                    .insert(http::header::RETRY_AFTER, value);
            }
        }
        response
    }
}

impl From<skiff_store::StoreError> for ApiError {
    fn from(error: skiff_store::StoreError) -> Self {
        match error {
            skiff_store::StoreError::Compacted { .. } => {
                ApiError::gone("The resourceVersion for the provided list is too old.")
            }
            other => ApiError::internal(other),
        }
    }
}
