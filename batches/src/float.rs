//! Provider floats: funding a provider's disbursement float from a bank account, and reading
//! each provider's float, in-transit and fee balances.

use cva_ledger::account::{AccountCode, Side};
use cva_ledger::audit::AuditContext;
use cva_ledger::entry::{IdempotencyKey, Line, NewEntry};
use cva_ledger::money::Amount;
use cva_registry::RegistryError;
use serde::Serialize;

use crate::{now, Batches, Result};

/// A provider's money as the ledger holds it (minor units).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct FloatView {
    pub provider: String,
    pub adapter: String,
    pub currency: String,
    /// What the provider holds for us.
    #[cfg_attr(feature = "openapi", schema(value_type = i64))]
    pub float: i128,
    /// Released to the provider, not yet confirmed or failed.
    #[cfg_attr(feature = "openapi", schema(value_type = i64))]
    pub in_transit: i128,
    /// Fees paid to the provider so far.
    #[cfg_attr(feature = "openapi", schema(value_type = i64))]
    pub fees: i128,
    /// Float left after everything in transit is paid (fees of unconfirmed lines excluded).
    #[cfg_attr(feature = "openapi", schema(value_type = i64))]
    pub available: i128,
}

impl Batches {
    /// Moves `amount` (major units, e.g. `"5000000"`) from `from` (an asset account such as
    /// `assets:bank:ecobank`) to the provider's float: the transfer the organisation makes
    /// before a release. Idempotent by `reference` (e.g. the bank transfer's id).
    pub async fn fund_float(
        &self,
        provider: &str,
        amount: &str,
        from: &str,
        reference: &str,
        ctx: &AuditContext,
    ) -> Result<FloatView> {
        let p = self.config.provider(provider).ok_or_else(|| {
            RegistryError::invalid(
                "provider",
                format!("no provider `{provider}` is configured"),
            )
        })?;
        let amount = Amount::parse(amount, p.currency)
            .map_err(|e| RegistryError::invalid("amount", e.to_string()))?;
        if amount.minor() <= 0 {
            return Err(RegistryError::invalid("amount", "must be above zero"));
        }
        let from =
            AccountCode::parse(from).map_err(|e| RegistryError::invalid("from", e.to_string()))?;
        if !from.as_str().starts_with("assets:") || from.as_str().starts_with("assets:float:") {
            return Err(RegistryError::invalid(
                "from",
                "fund a float from an asset account such as assets:bank:NAME",
            ));
        }
        let reference = reference.trim();
        if reference.is_empty() || reference.len() > 100 {
            return Err(RegistryError::invalid(
                "reference",
                "give the transfer's reference (1 to 100 characters)",
            ));
        }
        let float = AccountCode::parse(&p.float_account())
            .map_err(|e| RegistryError::Corrupt(e.to_string()))?;
        let key = IdempotencyKey::parse(&format!("float:{}:{reference}", p.name))
            .map_err(|e| RegistryError::invalid("reference", e.to_string()))?;
        let mut meta = serde_json::Map::new();
        meta.insert("provider".into(), p.name.clone().into());
        meta.insert("reference".into(), reference.into());
        let entry = NewEntry::new(
            key,
            format!("Float funding of {} ({reference})", p.name),
            now().date_naive(),
            meta,
            vec![
                Line {
                    account: float,
                    side: Side::Debit,
                    amount,
                },
                Line {
                    account: from,
                    side: Side::Credit,
                    amount,
                },
            ],
        )
        .map_err(cva_ledger::LedgerError::from)?;
        self.registry.ledger().post_audited(entry, ctx).await?;
        self.float(provider).await
    }

    /// One provider's balances.
    pub async fn float(&self, provider: &str) -> Result<FloatView> {
        let p = self.config.provider(provider).ok_or_else(|| {
            RegistryError::NotFound(format!("no provider `{provider}` is configured"))
        })?;
        let ledger = self.registry.ledger();
        let bal = |code: String| async move {
            let code =
                AccountCode::parse(&code).map_err(|e| RegistryError::Corrupt(e.to_string()))?;
            Ok::<i128, RegistryError>(ledger.account(&code).await?.map_or(0, |a| a.balance()))
        };
        let float = bal(p.float_account()).await?;
        let in_transit = bal(p.in_transit_account()).await?;
        let fees = bal(p.fees_account()).await?;
        Ok(FloatView {
            provider: p.name.clone(),
            adapter: match p.adapter {
                crate::provider::AdapterKind::GsmaMmapi => "gsma-mmapi".into(),
                crate::provider::AdapterKind::File => "file".into(),
            },
            currency: p.currency.code().to_owned(),
            float,
            in_transit,
            fees,
            available: float - in_transit,
        })
    }

    /// Every configured provider's balances.
    pub async fn floats(&self) -> Result<Vec<FloatView>> {
        let mut out = Vec::new();
        for p in &self.config.providers {
            out.push(self.float(&p.name).await?);
        }
        Ok(out)
    }
}
