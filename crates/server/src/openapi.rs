//! The OpenAPI document, generated from the handlers and types.

use utoipa::OpenApi;

use crate::api;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Souverix Federation site API",
        description = "One control plane site: versioned objects, their history and the audit log."
    ),
    paths(
        api::put_object,
        api::get_object,
        api::delete_object,
        api::list_objects,
        api::history,
        api::audit,
        api::site,
        crate::sync_api::status,
        crate::sync_api::sync_now,
        crate::sync_api::signal,
    ),
    components(schemas(
        model::ObjectDocument,
        model::DocumentMetadata,
        crate::problem::Problem,
        api::ObjectPage,
        api::HistoryPage,
        api::HistoryItem,
        api::AuditPage,
        api::AuditItem,
        api::SiteDocument,
        crate::sync_api::SignalBody,
    ))
)]
struct ApiDoc;

/// The OpenAPI 3.1 document served at `/v1/openapi.json`.
pub fn openapi_document() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}
