//! The OpenAPI document, generated from the handlers and types.

use utoipa::OpenApi;

use crate::api;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Souverix Federation site API",
        description = "One control plane site: versioned objects, their history, the audit log, sync, conflicts, events, webhook deliveries, and the fleet (nodes, objects in effect, drift, views)."
    ),
    paths(
        api::put_object,
        api::get_object,
        api::delete_object,
        api::list_objects,
        api::history,
        crate::placement::placement,
        crate::apply_api::apply,
        api::audit,
        api::site,
        crate::sync_api::status,
        crate::sync_api::sync_now,
        crate::sync_api::signal,
        crate::conflicts_api::list_conflicts,
        crate::conflicts_api::show_conflict,
        crate::conflicts_api::acknowledge_conflict,
        crate::conflicts_api::resolve_conflict,
        crate::events_api::events,
        crate::webhooks::deliveries,
        crate::fleet_api::heartbeat,
        crate::fleet_api::list_nodes,
        crate::fleet_api::effective,
        crate::fleet_api::drift,
        crate::fleet_api::global_view,
        crate::fleet_api::site_view,
    ),
    components(schemas(
        model::ObjectDocument,
        model::DocumentMetadata,
        crate::problem::Problem,
        api::ObjectPage,
        api::HistoryPage,
        crate::placement::Placement,
        crate::placement::Writer,
        crate::apply_api::ApplyRequest,
        crate::apply_api::ApplyOutcome,
        crate::apply_api::ApplyResponse,
        api::HistoryItem,
        api::AuditPage,
        api::AuditItem,
        api::SiteDocument,
        crate::sync_api::SignalBody,
        crate::conflicts_api::ConflictItem,
        crate::conflicts_api::ConflictSideItem,
        crate::conflicts_api::ConflictPage,
        crate::conflicts_api::ConflictDetail,
        crate::conflicts_api::ResolveBody,
        crate::conflicts_api::Resolution,
        crate::events_api::EventItem,
        crate::webhooks::DeliveryItem,
        crate::webhooks::DeliveryPage,
        crate::fleet_api::HeartbeatBody,
        crate::fleet_api::Health,
        crate::fleet_api::HeartbeatAnswer,
        crate::fleet_api::NodeItem,
        crate::fleet_api::NodePage,
        crate::fleet_api::EffectiveSet,
        crate::fleet_api::DriftNode,
        crate::fleet_api::DriftObject,
        crate::fleet_api::DriftReport,
        crate::fleet::FleetView,
        crate::fleet::ViewItem,
        crate::fleet::NodeCounts,
        crate::fleet::SiteSummary,
        crate::fleet::AutonomyState,
        crate::fleet::SummaryLink,
        crate::fleet::Totals,
    ))
)]
struct ApiDoc;

/// The OpenAPI 3.1 document served at `/v1/openapi.json`.
pub fn openapi_document() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}
