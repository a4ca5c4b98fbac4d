//! What a step works with: the attachment, its host and EPG as stored, the agent client and
//! the APIC, read afresh before each step (a step redone after a crash sees what is stored).

use std::net::Ipv4Addr;
use std::sync::Arc;

use sqlx::PgPool;
use uuid::Uuid;
use weft_agent_api::{AgentClient, Target, Token};
use weft_apic::{BindingMode, EpgKey, Immediacy, PathDn, VlanId};

use super::jobs::Job;
use super::{Engine, StepError};
use crate::apic::Apic;

/// One attachment with everything its steps need.
pub struct Ctx<'a> {
    pub engine: &'a Engine,
    pub job: &'a Job,
    pub id: Uuid,
    pub target: Target,
    pub interface: String,
    pub requested_address: Option<Ipv4Addr>,
    pub reservation: Option<String>,
    /// Set by the lease step, with the subnet's prefix length and gateway.
    pub address: Option<Ipv4Addr>,
    pub prefix_len: Option<i32>,
    pub gateway: Option<Ipv4Addr>,
    pub paths: Vec<PathDn>,
    pub host: String,
    pub agent_url: String,
    agent_token: Option<String>,
    pub mtu: i32,
    pub epg_id: i64,
    pub epg: EpgKey,
    pub bridge_domain: String,
    pub physical_domain: String,
    pub vlan: VlanId,
    pub mode: BindingMode,
    pub immediacy: Immediacy,
    pub managed: bool,
}

fn bad(what: &str, e: impl std::fmt::Display) -> StepError {
    StepError::permanent(what.to_string(), format!("stored value is invalid: {e}"))
}

impl<'a> Ctx<'a> {
    /// Reads the attachment; `None` when it no longer exists.
    pub async fn load(engine: &'a Engine, job: &'a Job) -> Result<Option<Ctx<'a>>, StepError> {
        let row = sqlx::query!(
            r#"SELECT a.target, a.interface, host(a.requested_address) AS requested_address,
                   a.reservation, host(a.address) AS address, a.prefix_len, host(a.gateway) AS gateway, a.paths,
                   h.name AS host, h.agent_url, h.agent_token, h.mtu,
                   e.id AS epg_id, e.tenant, e.app, e.name AS epg, e.bridge_domain,
                   e.physical_domain, e.mode, e.immediacy, e.managed, va.vlan AS "vlan?"
               FROM attachments a JOIN hosts h ON h.id = a.host_id JOIN epgs e ON e.id = a.epg_id
               LEFT JOIN vlan_assignments va ON va.epg_id = e.id
               WHERE a.id = $1"#,
            job.attachment_id
        )
        .fetch_optional(&engine.db)
        .await?;
        let Some(r) = row else { return Ok(None) };
        let epg = EpgKey::new(&r.tenant, &r.app, &r.epg).map_err(|e| bad("EPG", e.0))?;
        let addr = |s: Option<String>| -> Result<Option<Ipv4Addr>, StepError> {
            s.map(|s| s.parse().map_err(|e| bad("address", e)))
                .transpose()
        };
        let vlan = r
            .vlan
            .ok_or_else(|| StepError::permanent(epg.dn(), "the EPG has no VLAN"))?;
        Ok(Some(Ctx {
            engine,
            job,
            id: job.attachment_id,
            target: serde_json::from_value(r.target).map_err(|e| bad("target", e))?,
            interface: r.interface,
            requested_address: addr(r.requested_address)?,
            reservation: r.reservation,
            address: addr(r.address)?,
            prefix_len: r.prefix_len,
            gateway: addr(r.gateway)?,
            paths: r
                .paths
                .iter()
                .map(|p| PathDn::parse(p).map_err(|e| bad("path", e.0)))
                .collect::<Result<_, _>>()?,
            host: r.host,
            agent_url: r.agent_url,
            agent_token: r.agent_token,
            mtu: r.mtu,
            epg_id: r.epg_id,
            vlan: VlanId::from_i64(i64::from(vlan)).map_err(|e| bad("VLAN", e.0))?,
            mode: BindingMode::parse(&r.mode).map_err(|e| bad("mode", e.0))?,
            immediacy: Immediacy::parse(&r.immediacy).map_err(|e| bad("immediacy", e.0))?,
            managed: r.managed,
            bridge_domain: r.bridge_domain,
            physical_domain: r.physical_domain,
            epg,
        }))
    }

    pub fn db(&self) -> &PgPool {
        &self.engine.db
    }

    pub fn apic(&self) -> Result<&Arc<Apic>, StepError> {
        self.engine
            .apic
            .as_ref()
            .ok_or_else(|| StepError::permanent("APIC", "no APIC is configured"))
    }

    /// The host's agent, carrying the request id of the work.
    pub fn agent(&self) -> Result<AgentClient, StepError> {
        agent_client(
            &self.engine.settings,
            &self.host,
            &self.agent_url,
            self.agent_token.as_deref(),
            self.job.request_id.as_deref(),
        )
    }

    /// Maps an agent error: 5xx and unreachable are transient, the rest permanent.
    pub fn agent_error(&self, what: &str, e: weft_agent_api::ClientError) -> StepError {
        let object = format!("agent of host `{}`: {what}", self.host);
        if e.is_transient() {
            StepError::transient(object, e)
        } else {
            StepError::permanent(object, e)
        }
    }
}

/// A host's agent client (trusting the agents' CA when one is configured), its calls carrying
/// `request_id`: the workflow's steps and the reconciler talk to agents alike.
pub fn agent_client(
    settings: &super::Settings,
    host: &str,
    url: &str,
    token: Option<&str>,
    request_id: Option<&str>,
) -> Result<AgentClient, StepError> {
    let object = format!("agent of host `{host}` ({url})");
    let url = url
        .parse()
        .map_err(|e| StepError::permanent(object.clone(), e))?;
    let token = Token::new(token.unwrap_or_default().to_owned());
    let client = match &settings.agent_ca_pem {
        Some(pem) => AgentClient::with_root_ca_pem(url, token, pem),
        None => AgentClient::new(url, token),
    }
    .map_err(|e| StepError::permanent(object, e))?;
    Ok(match request_id {
        Some(id) => client.with_request_id(id.to_owned()),
        None => client,
    })
}
