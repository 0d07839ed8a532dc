//! Phase 9: `meshctl verify`. Builds the list of meshed workloads from the configuration
//! (identity, who may call it, what it calls), reaches each Envoy admin interface (through a
//! port-forward to its pod, or `--admin NAME=URL`), and turns the checks into an exit code.

use crate::app::{exit, load_config, AppError};
use crate::cli::{Global, OutputFormat};
use crate::config::Config;
use crate::context::Ctx;
use crate::verify::{self, AdminTransport, Backend, PortForwardAdmin, VerifyArgs, VerifyError, Workload};

/// Envoy's admin port in App Mesh sidecars.
pub const ADMIN_PORT: u16 = 9901;

/// One workload per configured service, with the SAN rules the mesh resources declare.
pub fn workloads(c: &Config) -> Vec<Workload> {
    c.services
        .iter()
        .map(|s| Workload {
            name: s.name.clone(),
            cluster: s.account.clone(),
            namespace: c.mesh.app_namespace.clone(),
            pod_selector: format!("app={}", s.app_label),
            admin_port: ADMIN_PORT,
            spiffe_id: c.spiffe_id(&s.spiffe_path),
            trust_domain: c.mesh.trust_domain.clone(),
            sds_socket: c.spire.agent_socket.clone(),
            allowed_callers: c.callers_of(&s.name).iter().map(|caller| c.spiffe_id(&caller.spiffe_path)).collect(),
            backends: s
                .backends
                .iter()
                .filter_map(|b| c.service(b))
                .map(|b| Backend { name: b.name.clone(), spiffe_id: c.spiffe_id(&b.spiffe_path), port: b.port })
                .collect(),
        })
        .collect()
}

fn usage_or_failed(e: VerifyError) -> AppError {
    match e {
        VerifyError::Usage(m) => AppError::Usage(m),
        other => AppError::Failed(other.to_string()),
    }
}

pub async fn run(g: &Global, args: &VerifyArgs) -> Result<u8, AppError> {
    let config = load_config(g)?;
    let all = workloads(&config);
    let targets: Vec<(Workload, Box<dyn AdminTransport>)> = if args.admin.is_empty() {
        let ctx = Ctx::new(config);
        let mut out: Vec<(Workload, Box<dyn AdminTransport>)> = Vec::new();
        for w in all {
            let client = ctx.kube.client(&w.cluster).await.map_err(|e| AppError::Failed(e.to_string()))?;
            let context = ctx.kube.context(&w.cluster).map_err(|e| AppError::Failed(e.to_string()))?;
            let t = PortForwardAdmin::for_workload(client, &w).with_context(context);
            out.push((w, Box::new(t)));
        }
        out
    } else {
        verify::admin_transports(&args.admin, &all).map_err(usage_or_failed)?
    };
    let report = verify::run(args, targets).await.map_err(usage_or_failed)?;
    match g.output {
        OutputFormat::Json => {
            for line in report.to_json_lines() {
                println!("{line}");
            }
        }
        OutputFormat::Text => {
            use std::io::IsTerminal;
            print!("{}", report.render_text(std::io::stdout().is_terminal()));
        }
    }
    Ok(if report.passed() { exit::OK } else { exit::FAILED })
}
