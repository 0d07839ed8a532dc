//! The scheduler on fake steps: order, overlap, failure propagation, resume, cancellation.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::*;

/// A fake resource: `exists` is its live state; apply creates it after `delay`.
struct Fake {
    meta: StepMeta,
    delay: Duration,
    exists: AtomicBool,
    fail: bool,
    fail_destroy: bool,
    teardown: Teardown,
    applies: AtomicUsize,
    log: Log,
}

/// What the fake steps did, in order: (step, action, when).
type Log = Arc<Mutex<Vec<(String, &'static str, Instant)>>>;

#[async_trait::async_trait]
impl Step for Fake {
    fn meta(&self) -> &StepMeta {
        &self.meta
    }
    async fn check(&self, _: &StepRun) -> Result<Status, Error> {
        self.log.lock().unwrap().push((self.meta.id.to_string(), "check", Instant::now()));
        if self.teardown == Teardown::ReadOnly && self.fail {
            return Err(Error::new(ErrorKind::Denied, format!("{} refused", self.meta.id)));
        }
        Ok(if self.exists.load(Ordering::SeqCst) { Status::UpToDate } else { Status::Missing })
    }
    async fn apply(&self, run: &StepRun) -> Result<(), Error> {
        self.log.lock().unwrap().push((self.meta.id.to_string(), "start", Instant::now()));
        run.progress("working");
        // Like a stack wait: polls until done, stopping early only when aborted.
        let deadline = Instant::now() + self.delay;
        while Instant::now() < deadline {
            if run.aborted() {
                return Err(Error::other(format!("{} aborted while waiting", self.meta.id)));
            }
            tokio::time::sleep(Duration::from_millis(5).min(self.delay)).await;
        }
        self.log.lock().unwrap().push((self.meta.id.to_string(), "end", Instant::now()));
        if self.fail {
            return Err(Error::other(format!("{} broke", self.meta.id)));
        }
        self.applies.fetch_add(1, Ordering::SeqCst);
        self.exists.store(true, Ordering::SeqCst);
        Ok(())
    }
    async fn destroy(&self, _: &StepRun) -> Result<(), Error> {
        self.log.lock().unwrap().push((self.meta.id.to_string(), "destroy", Instant::now()));
        if self.fail_destroy {
            return Err(Error::other(format!("{} is stuck", self.meta.id)));
        }
        self.exists.store(false, Ordering::SeqCst);
        Ok(())
    }
    fn teardown(&self) -> Teardown {
        self.teardown
    }
}

fn sid(id: &str) -> StepId {
    StepId(id.to_string())
}

struct Bed {
    steps: Vec<Arc<Fake>>,
    log: Log,
}

impl Bed {
    /// `(id, needs, delay ms, fails)`
    fn new(spec: &[(&str, &[&str], u64, bool)]) -> Bed {
        let log = Arc::new(Mutex::new(Vec::new()));
        let steps = spec
            .iter()
            .map(|(id, needs, ms, fail)| {
                let (phase, name) = id.split_once('/').unwrap();
                Arc::new(Fake {
                    meta: StepMeta::new(StepId::new(phase, name), "-", *id).needs(needs.iter().map(|n| sid(n))),
                    delay: Duration::from_millis(*ms),
                    exists: AtomicBool::new(false),
                    fail: *fail,
                    fail_destroy: false,
                    teardown: if phase == "preflight" { Teardown::ReadOnly } else { Teardown::Destroy },
                    applies: AtomicUsize::new(0),
                    log: log.clone(),
                })
            })
            .collect();
        Bed { steps, log }
    }
    fn graph(&self) -> Graph {
        Graph::new(self.steps.iter().map(|s| s.clone() as Arc<dyn Step>).collect()).unwrap()
    }
    fn time(&self, id: &str, what: &str) -> Instant {
        self.log.lock().unwrap().iter().find(|(i, w, _)| i == id && *w == what).map(|(_, _, t)| *t).unwrap()
    }
    fn applies(&self) -> usize {
        self.steps.iter().map(|s| s.applies.load(Ordering::SeqCst)).sum()
    }
    fn step(&self, id: &str) -> &Fake {
        self.steps.iter().find(|s| s.meta.id == id).unwrap()
    }
}

struct Collect(Mutex<Vec<Event>>);
impl EventSink for Collect {
    fn event(&self, e: &Event) {
        self.0.lock().unwrap().push(e.clone());
    }
}

async fn go(bed: &Bed, mode: Mode) -> RunSummary {
    run(&bed.graph(), &RunOptions::new(mode), Arc::new(NullSink)).await
}

#[tokio::test]
async fn independent_steps_overlap_and_dependents_wait() {
    // Three "clusters", then one step that needs all three.
    let bed = Bed::new(&[
        ("stacks/a", &[], 200, false),
        ("stacks/b", &[], 200, false),
        ("stacks/c", &[], 200, false),
        ("kube/all", &["stacks/a", "stacks/b", "stacks/c"], 10, false),
    ]);
    let s = go(&bed, Mode::Up).await;
    assert!(s.ok(), "{s:?}");
    // Concurrent: every independent step started before the first one ended (by the order
    // of events, not by the clock, so a loaded machine cannot fail it).
    let first_end = ["stacks/a", "stacks/b", "stacks/c"].iter().map(|id| bed.time(id, "end")).min().unwrap();
    for id in ["stacks/a", "stacks/b", "stacks/c"] {
        assert!(bed.time(id, "start") <= first_end, "{id} started only after another stack had finished");
    }
    let last_end = ["stacks/a", "stacks/b", "stacks/c"].iter().map(|id| bed.time(id, "end")).max().unwrap();
    assert!(bed.time("kube/all", "start") >= last_end, "a dependent started before its needs finished");
}

#[tokio::test]
async fn concurrency_limit_is_respected() {
    let bed = Bed::new(&[("x/a", &[], 50, false), ("x/b", &[], 50, false), ("x/c", &[], 50, false)]);
    let mut opts = RunOptions::new(Mode::Up);
    opts.concurrency = 1;
    let s = run(&bed.graph(), &opts, Arc::new(NullSink)).await;
    assert!(s.ok());
    let mut spans: Vec<(Instant, Instant)> = ["x/a", "x/b", "x/c"].iter().map(|id| (bed.time(id, "start"), bed.time(id, "end"))).collect();
    spans.sort();
    for w in spans.windows(2) {
        assert!(w[1].0 >= w[0].1, "two steps ran at once with --concurrency 1");
    }
}

#[tokio::test]
async fn failure_skips_dependents_and_independent_branches_finish() {
    let bed = Bed::new(&[
        ("s/bad", &[], 10, true),
        ("s/child", &["s/bad"], 10, false),
        ("s/grandchild", &["s/child"], 10, false),
        ("s/other", &[], 100, false),
        ("s/other-child", &["s/other"], 10, false),
    ]);
    let s = go(&bed, Mode::Up).await;
    assert_eq!(s.failed, vec![Failure { step: sid("s/bad"), message: "s/bad broke".to_string(), kind: ErrorKind::Other }]);
    let skipped: BTreeSet<&str> = s.skipped.iter().map(|(id, _)| id.as_str()).collect();
    assert_eq!(skipped, BTreeSet::from(["s/child", "s/grandchild"]));
    assert!(s.skipped.iter().any(|(id, why)| id.as_str() == "s/child" && why.contains("s/bad failed")));
    assert_eq!(s.outcome("s/other-child"), Some(&Outcome::Created));
    assert!(!s.ok());
}

#[tokio::test]
async fn second_run_changes_nothing() {
    let bed = Bed::new(&[("a/x", &[], 1, false), ("a/y", &["a/x"], 1, false)]);
    assert!(go(&bed, Mode::Up).await.ok());
    assert_eq!(bed.applies(), 2);
    let again = go(&bed, Mode::Up).await;
    assert_eq!(bed.applies(), 2, "a rerun applied something");
    assert!(again.done.iter().all(|(_, o)| *o == Outcome::UpToDate));
}

#[tokio::test]
async fn first_interrupt_lets_running_steps_finish_and_resume_continues() {
    let bed = Bed::new(&[("p/first", &[], 150, false), ("p/second", &["p/first"], 10, false), ("p/third", &["p/second"], 10, false)]);
    let opts = RunOptions::new(Mode::Up);
    let stop = opts.stop.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(30)).await;
        stop.cancel();
    });
    let s = run(&bed.graph(), &opts, Arc::new(NullSink)).await;
    assert!(s.interrupted);
    // The running step reached its end; nothing after it started.
    assert_eq!(s.outcome("p/first"), Some(&Outcome::Created));
    assert_eq!(s.skipped.len(), 2);
    assert!(!bed.step("p/second").exists.load(Ordering::SeqCst));
    let resumed = go(&bed, Mode::Up).await;
    assert!(resumed.ok());
    assert_eq!(resumed.outcome("p/first"), Some(&Outcome::UpToDate));
    assert_eq!(resumed.outcome("p/second"), Some(&Outcome::Created));
    assert_eq!(resumed.outcome("p/third"), Some(&Outcome::Created));
}

#[tokio::test]
async fn second_interrupt_aborts_running_waits() {
    let bed = Bed::new(&[("w/long", &[], 60_000, false), ("w/after", &["w/long"], 10, false)]);
    let opts = RunOptions::new(Mode::Up);
    let (stop, abort) = (opts.stop.clone(), opts.abort.clone());
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(20)).await;
        stop.cancel();
        tokio::time::sleep(Duration::from_millis(20)).await;
        abort.cancel();
    });
    let s = run(&bed.graph(), &opts, Arc::new(NullSink)).await;
    assert!(s.interrupted);
    assert_eq!(s.failed.len(), 1, "{s:?}");
    assert!(s.failed[0].message.contains("aborted while waiting"), "{s:?}");
    assert_eq!(s.skip_reason("w/after"), Some("needs w/long failed"));
}

#[tokio::test]
async fn down_destroys_dependents_first_and_tolerates_gone() {
    let bed = Bed::new(&[
        ("d/base", &[], 1, false),
        ("d/mid", &["d/base"], 1, false),
        ("d/top", &["d/mid"], 1, false),
        ("d/never", &[], 1, false),
    ]);
    assert!(go(&bed, Mode::Up).await.ok());
    bed.step("d/never").exists.store(false, Ordering::SeqCst);
    let s = go(&bed, Mode::Down).await;
    assert!(s.ok());
    assert!(bed.time("d/top", "destroy") <= bed.time("d/mid", "destroy"));
    assert!(bed.time("d/mid", "destroy") <= bed.time("d/base", "destroy"));
    assert_eq!(s.outcome("d/never"), Some(&Outcome::AlreadyGone));
    let again = go(&bed, Mode::Down).await;
    assert!(again.done.iter().all(|(_, o)| *o == Outcome::AlreadyGone));
}

#[tokio::test]
async fn plan_checks_without_changing_and_marks_blocked_steps_pending() {
    let bed = Bed::new(&[("q/a", &[], 1, false), ("q/b", &["q/a"], 1, false), ("q/done", &[], 1, false)]);
    bed.step("q/done").exists.store(true, Ordering::SeqCst);
    let s = go(&bed, Mode::Plan).await;
    assert_eq!(bed.applies(), 0);
    assert_eq!(s.outcome("q/a"), Some(&Outcome::Checked(Status::Missing)));
    assert_eq!(s.outcome("q/b"), Some(&Outcome::Pending(vec![sid("q/a")])));
    assert_eq!(s.outcome("q/done"), Some(&Outcome::Checked(Status::UpToDate)));
}

#[tokio::test]
async fn events_follow_each_step_in_order() {
    let bed = Bed::new(&[("e/one", &[], 1, false)]);
    let sink = Arc::new(Collect(Mutex::new(Vec::new())));
    run(&bed.graph(), &RunOptions::new(Mode::Up), sink.clone()).await;
    let kinds: Vec<EventKind> = sink.0.lock().unwrap().iter().map(|e| e.kind.clone()).collect();
    assert_eq!(kinds, vec![EventKind::Started, EventKind::Progress("working".into()), EventKind::Done(Outcome::Created)]);
}

#[tokio::test]
async fn selection_runs_only_selected_steps() {
    let bed = Bed::new(&[("s/a", &[], 1, false), ("t/b", &["s/a"], 1, false)]);
    let mut opts = RunOptions::new(Mode::Up);
    opts.selection = Some(BTreeSet::from([sid("t/b")]));
    let s = run(&bed.graph(), &opts, Arc::new(NullSink)).await;
    assert!(s.ok());
    assert_eq!(bed.step("s/a").applies.load(Ordering::SeqCst), 0);
    assert_eq!(s.outcome("t/b"), Some(&Outcome::Created));
}

#[test]
fn graph_rejects_cycles_unknown_needs_and_duplicates() {
    let cyc = Bed::new(&[("c/a", &["c/b"], 1, false), ("c/b", &["c/a"], 1, false)]);
    let steps = || cyc.steps.iter().map(|s| s.clone() as Arc<dyn Step>).collect::<Vec<_>>();
    assert!(matches!(Graph::new(steps()), Err(GraphError::Cycle(_))));
    let unknown = Bed::new(&[("u/a", &["u/nope"], 1, false)]);
    assert_eq!(
        Graph::new(unknown.steps.iter().map(|s| s.clone() as Arc<dyn Step>).collect()).err(),
        Some(GraphError::UnknownNeed { step: "u/a".into(), need: "u/nope".into() })
    );
    let dup = Bed::new(&[("d/a", &[], 1, false), ("d/a", &[], 1, false)]);
    assert_eq!(Graph::new(dup.steps.iter().map(|s| s.clone() as Arc<dyn Step>).collect()).err(), Some(GraphError::Duplicate("d/a".into())));
}

#[tokio::test]
async fn read_only_steps_run_first_in_every_walk() {
    let bed =
        Bed::new(&[("preflight/accounts", &[], 1, false), ("a/base", &["preflight/accounts"], 1, false), ("a/top", &["a/base"], 1, false)]);
    assert!(go(&bed, Mode::Up).await.ok());
    bed.log.lock().unwrap().clear();
    let s = go(&bed, Mode::Down).await;
    assert!(s.ok(), "{s:?}");
    let first = bed.log.lock().unwrap().first().cloned().unwrap();
    assert_eq!((first.0.as_str(), first.1), ("preflight/accounts", "check"), "down did not start with preflight");
    assert!(bed.time("preflight/accounts", "check") <= bed.time("a/top", "check"));
}

#[tokio::test]
async fn a_failing_read_only_step_stops_down_before_any_destroy() {
    let bed = Bed::new(&[("preflight/accounts", &[], 1, false), ("a/base", &["preflight/accounts"], 1, false)]);
    assert!(go(&bed, Mode::Up).await.ok());
    let mut failing = Bed::new(&[("preflight/accounts", &[], 1, true), ("a/base", &["preflight/accounts"], 1, false)]);
    failing.steps[1] = bed.steps[1].clone();
    let s = go(&failing, Mode::Down).await;
    assert_eq!(s.failed.len(), 1);
    assert_eq!(s.failed[0].kind, ErrorKind::Denied);
    assert_eq!(s.skip_reason("a/base"), Some("needs preflight/accounts failed"));
    assert!(bed.step("a/base").exists.load(Ordering::SeqCst), "destroyed although preflight failed");
}

#[tokio::test]
async fn steps_that_go_with_their_parent_are_not_checked_on_the_way_down() {
    let mut bed = Bed::new(&[("r/share", &[], 1, false), ("r/accept", &["r/share"], 1, false)]);
    Arc::get_mut(&mut bed.steps[1]).unwrap().teardown = Teardown::WithParent;
    let s = go(&bed, Mode::Down).await;
    assert!(s.ok(), "{s:?}");
    assert_eq!(s.outcome("r/accept"), Some(&Outcome::AlreadyGone));
    assert!(!bed.log.lock().unwrap().iter().any(|(id, what, _)| id == "r/accept" && *what == "check"));
}

#[tokio::test]
async fn force_destroys_what_lies_under_a_failed_teardown() {
    let mut bed = Bed::new(&[("k/stack", &[], 1, false), ("k/inside", &["k/stack"], 1, false)]);
    assert!(go(&bed, Mode::Up).await.ok());
    Arc::get_mut(&mut bed.steps[1]).unwrap().fail_destroy = true;
    let s = go(&bed, Mode::Down).await;
    assert_eq!(s.skip_reason("k/stack"), Some("k/inside must be destroyed first, but k/inside failed"));
    assert!(bed.step("k/stack").exists.load(Ordering::SeqCst));
    let mut opts = RunOptions::new(Mode::Down);
    opts.force = true;
    let s = run(&bed.graph(), &opts, Arc::new(NullSink)).await;
    assert_eq!(s.failed.len(), 1);
    assert_eq!(s.outcome("k/stack"), Some(&Outcome::Destroyed));
}

// ------------------------------------------------------------------ after edges, Absent

/// A graph of fakes plus extra steps (the wrappers).
fn graph_with(bed: &Bed, extra: Vec<Arc<dyn Step>>) -> Graph {
    Graph::new(bed.steps.iter().map(|s| s.clone() as Arc<dyn Step>).chain(extra).collect()).unwrap()
}

/// A fake that goes `after` others (order only).
fn fake_after(bed: &Bed, id: &str, after: &[&str]) -> Arc<Fake> {
    let (phase, name) = id.split_once('/').unwrap();
    Arc::new(Fake {
        meta: StepMeta::new(StepId::new(phase, name), "-", id).after(after.iter().map(|a| sid(a))),
        delay: Duration::from_millis(1),
        exists: AtomicBool::new(false),
        fail: false,
        fail_destroy: false,
        teardown: Teardown::Destroy,
        applies: AtomicUsize::new(0),
        log: bed.log.clone(),
    })
}

#[tokio::test]
async fn after_edges_keep_their_direction_on_the_way_down_and_only_order() {
    let mut bed = Bed::new(&[("a/first", &[], 1, false)]);
    let second = fake_after(&bed, "a/second", &["a/first"]);
    bed.steps.push(second);
    assert_eq!(bed.graph().topo_order().unwrap(), [sid("a/first"), sid("a/second")]);
    assert_eq!(bed.graph().down_order().unwrap(), [sid("a/first"), sid("a/second")], "down does not reverse an after edge");
    assert!(bed.graph().ancestors("a/second").is_empty(), "order only: not a need");
    // A plan checks a step whatever the state of what it goes after.
    let s = go(&bed, Mode::Plan).await;
    assert_eq!(s.outcome("a/second"), Some(&Outcome::Checked(Status::Missing)));
    assert!(go(&bed, Mode::Up).await.ok());
    assert!(bed.time("a/first", "end") <= bed.time("a/second", "start"));
    bed.log.lock().unwrap().clear();
    assert!(go(&bed, Mode::Down).await.ok());
    assert!(bed.time("a/first", "destroy") <= bed.time("a/second", "destroy"), "destroyed in the same order as up");
    // A selection that leaves the other step out runs on its own.
    let mut opts = RunOptions::new(Mode::Up);
    opts.selection = Some(BTreeSet::from([sid("a/second")]));
    let s = run(&bed.graph(), &opts, Arc::new(NullSink)).await;
    assert_eq!(s.outcome("a/second"), Some(&Outcome::Created));
    assert_eq!(s.outcome("a/first"), None);
}

#[test]
fn a_cycle_only_down_takes_is_refused() {
    // up: x → z (after), y → z (need), x → y (need): acyclic. down: x waits z (after), z
    // waits y (y needs z), y waits x (x needs y): a cycle.
    let mut bed = Bed::new(&[("c/z", &[], 1, false), ("c/y", &["c/z"], 1, false)]);
    let x = Arc::new(Fake {
        meta: StepMeta::new(StepId::new("c", "x"), "-", "x").needs([sid("c/y")]).after([sid("c/z")]),
        delay: Duration::from_millis(1),
        exists: AtomicBool::new(false),
        fail: false,
        fail_destroy: false,
        teardown: Teardown::Destroy,
        applies: AtomicUsize::new(0),
        log: bed.log.clone(),
    });
    bed.steps.push(x);
    let steps: Vec<Arc<dyn Step>> = bed.steps.iter().map(|s| s.clone() as Arc<dyn Step>).collect();
    assert!(matches!(Graph::new(steps), Err(GraphError::Cycle(_))));
}

/// What an old provider made: a mesh, a share of it, its acceptance (goes with the share),
/// a controller in a cluster and a resource needing all three; the app uses them.
fn retired_bed() -> (Bed, Vec<Arc<Fake>>) {
    let bed = Bed::new(&[
        ("preflight/accounts", &[], 1, false),
        ("kubeconfig/a", &["preflight/accounts"], 1, false),
        ("yelb/a", &["kubeconfig/a"], 1, false),
    ]);
    let inner = Bed::new(&[
        ("mesh/mesh", &["preflight/accounts"], 1, false),
        ("mesh/share", &["mesh/mesh"], 1, false),
        ("mesh/accept", &["mesh/share"], 1, false),
        ("mesh/ctl", &["kubeconfig/a"], 1, false),
        ("mesh/res", &["mesh/ctl", "mesh/mesh", "mesh/accept"], 1, false),
    ]);
    let mut steps = inner.steps;
    Arc::get_mut(&mut steps[2]).unwrap().teardown = Teardown::WithParent;
    let steps: Vec<Arc<Fake>> = steps
        .into_iter()
        .map(|s| {
            let mut s = Arc::try_unwrap(s).ok().unwrap();
            s.log = bed.log.clone();
            s.exists = AtomicBool::new(true);
            Arc::new(s)
        })
        .collect();
    (bed, steps)
}

fn wrap(inner: &[Arc<Fake>]) -> Vec<Arc<dyn Step>> {
    Absent::wrap_all(inner.iter().map(|s| s.clone() as Arc<dyn Step>).collect(), &[sid("yelb/a")], "the old provider is no longer selected")
}

#[test]
fn absent_ids_descriptions_and_edges_come_from_the_inner_steps() {
    let (_bed, inner) = retired_bed();
    let w = wrap(&inner);
    let meta = |id: &str| w.iter().find(|s| s.meta().id == id).unwrap_or_else(|| panic!("no {id}")).meta().clone();
    let ids: Vec<String> = w.iter().map(|s| s.meta().id.to_string()).collect();
    assert_eq!(ids, ["mesh/retire-mesh", "mesh/retire-share", "mesh/retire-accept", "mesh/retire-ctl", "mesh/retire-res"]);
    assert_eq!(meta("mesh/retire-ctl").description, "remove what mesh/ctl made (mesh/ctl): the old provider is no longer selected");
    assert_eq!(meta("mesh/retire-ctl").phase, "mesh");
    // Reversed among themselves (as order), after the app.
    assert_eq!(meta("mesh/retire-mesh").after, [sid("mesh/retire-res"), sid("mesh/retire-share"), sid("yelb/a")]);
    assert_eq!(meta("mesh/retire-share").after, [sid("mesh/retire-accept"), sid("yelb/a")]);
    assert_eq!(meta("mesh/retire-ctl").after, [sid("mesh/retire-res"), sid("yelb/a")]);
    assert_eq!(meta("mesh/retire-res").after, [sid("yelb/a")]);
    // Needs: what the inner step needed outside the set, also through other inner steps.
    assert_eq!(meta("mesh/retire-res").needs, [sid("kubeconfig/a"), sid("preflight/accounts")]);
    assert_eq!(meta("mesh/retire-share").needs, [sid("preflight/accounts")]);
    assert_eq!(meta("mesh/retire-ctl").needs, [sid("kubeconfig/a")]);
    assert_eq!(w[2].teardown(), Teardown::WithParent, "the acceptance goes with the share");
    assert_eq!(w[0].teardown(), Teardown::Destroy);
}

#[tokio::test]
async fn absent_checks_map_present_to_drift_in_forward_walks_and_keep_the_inner_status_down() {
    let (_bed, inner) = retired_bed();
    let w = wrap(&inner);
    let mesh = &w[0];
    let run_in = |mode| StepRun::detached("mesh/retire-mesh").with_mode(mode);
    for mode in [Mode::Up, Mode::Plan, Mode::Status] {
        assert_eq!(mesh.check(&run_in(mode)).await.unwrap(), Status::Drifted("exists; would remove".into()), "{mode:?}");
    }
    for mode in [Mode::Down, Mode::PlanDown] {
        assert_eq!(mesh.check(&run_in(mode)).await.unwrap(), Status::UpToDate, "{mode:?}: the inner status");
    }
    mesh.apply(&run_in(Mode::Up)).await.unwrap();
    assert!(!inner[0].exists.load(Ordering::SeqCst), "apply destroys the inner step's resources");
    assert_eq!(inner[0].applies.load(Ordering::SeqCst), 0, "and never applies it");
    assert_eq!(mesh.check(&run_in(Mode::Up)).await.unwrap(), Status::UpToDate);
    assert_eq!(mesh.check(&run_in(Mode::Down)).await.unwrap(), Status::Missing);
    // The acceptance has nothing of its own: up to date, never checked nor destroyed.
    assert_eq!(w[2].check(&run_in(Mode::Up)).await.unwrap(), Status::UpToDate);
    w[2].apply(&run_in(Mode::Up)).await.unwrap();
    assert!(inner[2].exists.load(Ordering::SeqCst));
    assert!(!inner[2].log.lock().unwrap().iter().any(|(id, _, _)| id == "mesh/accept"));
}

#[tokio::test]
async fn absent_steps_remove_after_the_app_in_reverse_order_whichever_way_the_graph_is_walked() {
    let (bed, inner) = retired_bed();
    for s in &bed.steps {
        s.exists.store(true, Ordering::SeqCst);
    }
    let g = graph_with(&bed, wrap(&inner));
    let destroyed = |id: &str| {
        bed.log
            .lock()
            .unwrap()
            .iter()
            .find(|(i, w, _)| i == id && *w == "destroy")
            .map(|(_, _, t)| *t)
            .unwrap_or_else(|| panic!("{id} not destroyed"))
    };
    // up: the app is (re)applied first, then the old resources go, what stood on a resource first.
    bed.step("yelb/a").exists.store(false, Ordering::SeqCst);
    let s = run(&g, &RunOptions::new(Mode::Up), Arc::new(NullSink)).await;
    assert!(s.ok(), "{s:?}");
    assert!(bed.time("yelb/a", "end") <= destroyed("mesh/res"));
    assert!(destroyed("mesh/res") <= destroyed("mesh/ctl") && destroyed("mesh/res") <= destroyed("mesh/mesh"));
    assert!(destroyed("mesh/share") <= destroyed("mesh/mesh"));
    assert!(matches!(s.outcome("mesh/retire-mesh"), Some(Outcome::Updated(_))));
    assert_eq!(s.outcome("mesh/retire-accept"), Some(&Outcome::UpToDate));
    assert!(inner.iter().filter(|f| f.teardown == Teardown::Destroy).all(|f| !f.exists.load(Ordering::SeqCst)));
    let again = run(&g, &RunOptions::new(Mode::Up), Arc::new(NullSink)).await;
    assert!(again.done.iter().all(|(_, o)| *o == Outcome::UpToDate), "{:?}", again.done);
    // down with the old resources back: the app goes first, the old resources in the same
    // order as on the way up, the cluster access only after them.
    for f in &inner {
        f.exists.store(true, Ordering::SeqCst);
    }
    bed.log.lock().unwrap().clear();
    let s = run(&g, &RunOptions::new(Mode::Down), Arc::new(NullSink)).await;
    assert!(s.ok(), "{s:?}");
    assert!(destroyed("yelb/a") <= destroyed("mesh/res"), "the app stops using the old mesh first");
    assert!(destroyed("mesh/res") <= destroyed("mesh/ctl") && destroyed("mesh/res") <= destroyed("mesh/mesh"));
    assert!(destroyed("mesh/share") <= destroyed("mesh/mesh"));
    assert!(destroyed("mesh/ctl") <= destroyed("kubeconfig/a"), "the cluster is reachable while its controller goes");
    assert_eq!(s.outcome("mesh/retire-accept"), Some(&Outcome::AlreadyGone));
    let static_down = g.down_order().unwrap();
    let pos = |id: &str| static_down.iter().position(|x| x == &id).unwrap();
    assert!(
        pos("yelb/a") < pos("mesh/retire-res")
            && pos("mesh/retire-res") < pos("mesh/retire-ctl")
            && pos("mesh/retire-ctl") < pos("kubeconfig/a")
    );
}
