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
    let bed = Bed::new(&[("preflight/accounts", &[], 1, false), ("a/base", &["preflight/accounts"], 1, false), ("a/top", &["a/base"], 1, false)]);
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
