//! `meshctl verify`: builds one proxy per meshed workload from the topology and the mesh
//! provider's verify profile (admin port, hints), reaches each Envoy admin interface (through
//! a port-forward to its pod, or `--admin NAME=URL`), and turns the checks into an exit code.

use super::{exit, load_session, AppError};
use crate::cli::{Global, OutputFormat};
use crate::session::Session;
use crate::verify::{self, AdminTarget, Backend, PortForwardAdmin, Proxy, VerifyArgs, VerifyError};

/// One proxy per workload, with the SAN rules the topology implies.
pub fn proxies(session: &Session) -> Vec<Proxy> {
    let t = &session.topology;
    let profile = session.mesh.verify_profile();
    t.workloads
        .iter()
        .map(|w| Proxy {
            name: w.name.clone(),
            cluster: w.account.clone(),
            namespace: t.namespace.clone(),
            pod_selector: w.selector(),
            admin_port: profile.admin_port,
            spiffe_id: w.spiffe_id.clone(),
            trust_domain: t.trust_domain.clone(),
            sds_socket: t.agent_socket.clone(),
            allowed_callers: w.callers.iter().map(|c| c.spiffe_id.clone()).collect(),
            backends: w.backends.iter().map(|b| Backend { name: b.name.clone(), spiffe_id: b.spiffe_id.clone(), port: b.port }).collect(),
        })
        .collect()
}

fn usage_or_failed(e: VerifyError) -> AppError {
    match e {
        VerifyError::Usage(m) => AppError::Usage(m),
        other => AppError::Failed(crate::error::chain(&other)),
    }
}

pub async fn run(g: &Global, args: &VerifyArgs) -> Result<u8, AppError> {
    let session = load_session(g)?;
    let all = proxies(&session);
    let targets: Vec<AdminTarget> = if args.admin.is_empty() {
        let mut out: Vec<AdminTarget> = Vec::new();
        for p in all {
            let client = session.kube.client(&p.cluster).await.map_err(|e| AppError::Failed(e.to_string()))?;
            let context = session.kube.context(&p.cluster).map_err(|e| AppError::Failed(e.to_string()))?;
            let t = PortForwardAdmin::for_workload(client, &p).with_context(context);
            out.push((p, Box::new(t)));
        }
        out
    } else {
        verify::admin_transports(&args.admin, &all).map_err(usage_or_failed)?
    };
    let profile = session.mesh.verify_profile();
    let report = verify::run(args, targets, profile.hints.as_ref()).await.map_err(usage_or_failed)?;
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
