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
    applies: AtomicUsize,
    log: Arc<Mutex<Vec<(String, &'static str, Instant)>>>,
}

#[async_trait::async_trait]
impl Step for Fake {
    fn meta(&self) -> &StepMeta {
        &self.meta
    }
    async fn check(&self, _: &StepCx) -> Result<Status, StepError> {
        Ok(if self.exists.load(Ordering::SeqCst) { Status::UpToDate } else { Status::Missing })
    }
    async fn apply(&self, cx: &StepCx) -> Result<(), StepError> {
        self.log.lock().unwrap().push((self.meta.id.clone(), "start", Instant::now()));
        cx.progress("working");
        tokio::time::sleep(self.delay).await;
        self.log.lock().unwrap().push((self.meta.id.clone(), "end", Instant::now()));
        if self.fail {
            return Err(StepError::new(format!("{} broke", self.meta.id)));
        }
        self.applies.fetch_add(1, Ordering::SeqCst);
        self.exists.store(true, Ordering::SeqCst);
        Ok(())
    }
    async fn destroy(&self, _: &StepCx) -> Result<(), StepError> {
        self.log.lock().unwrap().push((self.meta.id.clone(), "destroy", Instant::now()));
        self.exists.store(false, Ordering::SeqCst);
        Ok(())
    }
}

struct Bed {
    steps: Vec<Arc<Fake>>,
    log: Arc<Mutex<Vec<(String, &'static str, Instant)>>>,
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
                    meta: StepMeta::new(phase, name, "-", *id).needs(needs.iter().copied()),
                    delay: Duration::from_millis(*ms),
                    exists: AtomicBool::new(false),
                    fail: *fail,
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

async fn go(bed: &Bed, mode: Mode) -> Summary {
    run(&bed.graph(), &RunOptions::new(mode), Arc::new(NullSink)).await
}

#[tokio::test]
async fn independent_steps_overlap_and_dependents_wait() {
    // Three "clusters" of 300 ms each, then one step that needs all three.
    let bed = Bed::new(&[
        ("stacks/a", &[], 300, false),
        ("stacks/b", &[], 300, false),
        ("stacks/c", &[], 300, false),
        ("kube/all", &["stacks/a", "stacks/b", "stacks/c"], 10, false),
    ]);
    let started = Instant::now();
    let s = go(&bed, Mode::Up).await;
    let took = started.elapsed();
    assert!(s.ok(), "{s:?}");
    // Concurrent: far below the 900 ms a sequential run needs.
    println!("three 300 ms steps plus one: {took:?} (sequential would be ≥ 910 ms)");
    assert!(took < Duration::from_millis(700), "took {took:?}");
    let last_end = ["stacks/a", "stacks/b", "stacks/c"].iter().map(|id| bed.time(id, "end")).max().unwrap();
    assert!(bed.time("kube/all", "start") >= last_end, "a dependent started before its needs finished");
}

#[tokio::test]
async fn concurrency_limit_is_respected() {
    let bed = Bed::new(&[("x/a", &[], 200, false), ("x/b", &[], 200, false), ("x/c", &[], 200, false)]);
    let mut opts = RunOptions::new(Mode::Up);
    opts.concurrency = 1;
    let started = Instant::now();
    let s = run(&bed.graph(), &opts, Arc::new(NullSink)).await;
    assert!(s.ok());
    assert!(started.elapsed() >= Duration::from_millis(600), "steps overlapped with --concurrency 1");
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
    assert_eq!(s.failed, vec![("s/bad".to_string(), "s/bad broke".to_string())]);
    let skipped: BTreeSet<&str> = s.skipped.iter().map(|(id, _)| id.as_str()).collect();
    assert_eq!(skipped, BTreeSet::from(["s/child", "s/grandchild"]));
    assert!(s.skipped.iter().any(|(id, why)| id == "s/child" && why.contains("s/bad failed")));
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
async fn interrupted_run_resumes_where_it_stopped() {
    let bed = Bed::new(&[("p/first", &[], 150, false), ("p/second", &["p/first"], 10, false), ("p/third", &["p/second"], 10, false)]);
    let opts = RunOptions::new(Mode::Up);
    let cancel = opts.cancel.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(50)).await;
        cancel.cancel();
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
async fn down_destroys_dependents_first_and_tolerates_gone() {
    let bed = Bed::new(&[("d/base", &[], 1, false), ("d/mid", &["d/base"], 1, false), ("d/top", &["d/mid"], 1, false), ("d/never", &[], 1, false)]);
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
    assert_eq!(s.outcome("q/b"), Some(&Outcome::Pending(vec!["q/a".into()])));
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
    opts.selection = Some(BTreeSet::from(["t/b".to_string()]));
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
