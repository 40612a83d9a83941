//! The OpenAPI 3 document, generated from the handlers' `#[utoipa::path]` annotations: the
//! router is built with `utoipa_axum::routes!`, which registers a route and its documentation
//! together, so a route cannot be served without being documented. Served at
//! `GET /v1/openapi.json`.

use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "CVA disbursement ledger API",
        description = "Cash and voucher assistance: ledger, users and audit trail. Errors are RFC 9457 problem+json.",
    ),
    modifiers(&BearerAuth),
    security(("bearer" = [])),
    tags(
        (name = "health"), (name = "auth"), (name = "users"), (name = "ledger"), (name = "audit"),
        (name = "batches", description = "Payment batches. Roles: programme_officer creates, submits, cancels and re-issues; finance_officer approves, authorises, releases and sends; every role reads (admin reads only). The preparer never signs and nobody signs a batch twice (403 `same-person`)."),
        (name = "providers", description = "Provider floats. Every role reads; finance_officer funds."),
        (name = "exceptions", description = "The reconciliation exceptions queue. Every role reads; finance_officer assigns, comments, resolves, proposes adjusting entries and approves or rejects them. The proposer of an adjustment never approves or rejects it (403 `same-person`); a resolved exception is final (409)."),
        (name = "reports", description = "Reports for auditors with their SHA-256 (`X-Report-SHA256`), each recorded with a `report.produce` audit event, and verification of a report file. Every role reads; the household report masks personal data unless the caller is an admin or programme officer; whole-book reports need unrestricted access.")
    )
)]
#[derive(Debug)]
pub struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .build(),
            ),
        );
    }
}
