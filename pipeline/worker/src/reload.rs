//! Jobs and scoring model reload without a restart.
//!
//! A background task looks at `[jobs] dir` and `[jobs] scoring` every
//! `[jobs] reload_interval` (a Kubernetes ConfigMap volume changes them in
//! place). A changed content is loaded and checked as `jobs validate`
//! checks it (every job parses and plans, the model's features exist, the
//! response delay fits the window) and handed to the worker loop, which
//! switches at a window boundary: windows ending after the boundary where
//! the most advanced partition pair stands are scored with the new jobs and
//! model, every earlier one with the old, so no window is lost or scored
//! twice. A change that fails the checks is refused with one error line and
//! the old jobs and model keep scoring. Every score carries the model
//! version and jobs digest that produced it.
//!
//! Refused as well, because they need a restart or would hide a change:
//! a different base window, lateness or response delay (the open windows
//! were cut by the old ones), and a changed scoring model that kept its
//! `model_version` (its scores could not be told from the old model's).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;

use crate::config::Config;
use crate::process::Detector;

/// Validated new detectors, as the watcher finds them.
pub struct Reloads {
    rx: mpsc::Receiver<Arc<Detector>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Reloads {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// What must not change without a restart, and what names a model.
#[derive(Debug, Clone, PartialEq)]
struct Shape {
    window_ms: i64,
    lateness_ms: i64,
    max_response_delay_ms: i64,
}

impl Shape {
    fn of(d: &Detector) -> Shape {
        Shape {
            window_ms: d.jobs.window_ms,
            lateness_ms: d.jobs.max_lateness_ms(),
            max_response_delay_ms: d.max_response_delay_ms,
        }
    }
}

impl Reloads {
    /// Watch the configured jobs and model for changes against `current`
    /// (`None` when `[jobs] reload_interval` is 0). Needs a Tokio runtime.
    pub fn watch(cfg: &Config, current: &Detector) -> Option<Reloads> {
        let interval = cfg.jobs.reload_interval;
        if interval.is_zero() {
            return None;
        }
        let (tx, rx) = mpsc::channel(1);
        let watcher = Watcher {
            cfg: cfg.clone(),
            interval,
            seen: fingerprint(&cfg.jobs.dir, &cfg.jobs.scoring).ok(),
            version: current.model_version.clone(),
            model: format!("{:?}", current.model),
            shape: Shape::of(current),
            publish_members: current.publish_members,
        };
        Some(Reloads {
            rx,
            task: tokio::spawn(watcher.run(tx)),
        })
    }

    /// The newest validated change, if one came since the last call.
    pub fn try_next(&mut self) -> Option<Arc<Detector>> {
        let mut newest = None;
        while let Ok(d) = self.rx.try_recv() {
            newest = Some(d);
        }
        newest
    }
}

struct Watcher {
    cfg: Config,
    interval: Duration,
    /// Fingerprint of the files last looked at.
    seen: Option<u64>,
    /// The running detector's model version (with the jobs digest) and
    /// model, as handed out last.
    version: String,
    model: String,
    shape: Shape,
    publish_members: bool,
}

impl Watcher {
    async fn run(mut self, tx: mpsc::Sender<Arc<Detector>>) {
        let (dir, scoring) = (self.cfg.jobs.dir.clone(), self.cfg.jobs.scoring.clone());
        loop {
            tokio::time::sleep(self.interval).await;
            let fp = match fingerprint(&dir, &scoring) {
                Ok(fp) => fp,
                Err(e) => {
                    // A ConfigMap swap can leave the files missing for an
                    // instant; the next look decides.
                    tracing::debug!(error = %e, "cannot read the jobs or model to look for changes");
                    continue;
                }
            };
            if self.seen == Some(fp) {
                continue;
            }
            self.seen = Some(fp);
            match self.check().await {
                Ok(Some(d)) => {
                    tracing::info!(
                        model = %d.model_version,
                        previous = %self.version,
                        jobs = d.jobs.jobs.len(),
                        "changed jobs or model validated; the worker switches at the next window boundary"
                    );
                    self.version = d.model_version.clone();
                    self.model = format!("{:?}", d.model);
                    if tx.send(Arc::new(d)).await.is_err() {
                        return;
                    }
                }
                Ok(None) => tracing::info!(
                    model = %self.version,
                    "the jobs or model files changed, but not the jobs or the model: nothing to reload"
                ),
                Err(why) => {
                    crate::telemetry::reload("refused");
                    tracing::error!(
                        jobs = %dir.display(),
                        scoring = %scoring.display(),
                        still_scoring_with = %self.version,
                        "refusing the changed jobs or model: {why}"
                    );
                }
            }
        }
    }

    /// The changed detector; `None` when the jobs and model are the running
    /// ones (a comment or a golden test changed).
    async fn check(&self) -> Result<Option<Detector>, String> {
        let mut d = crate::worker::load_detector(&self.cfg)
            .await
            .map_err(|e| e.to_string())?;
        let shape = Shape::of(&d);
        if shape != self.shape {
            return Err(format!(
                "it changes the base window, the longest lateness or the response delay ({:?} → {:?}), which needs a restart",
                self.shape, shape
            ));
        }
        let model = format!("{:?}", d.model);
        if d.model_version == self.version {
            if model != self.model {
                return Err(format!(
                    "the scoring model changed but its model_version did not ({}): give it a new model_version, so that every score names the model that made it",
                    d.model.model_version
                ));
            }
            return Ok(None);
        }
        d.publish_members = self.publish_members;
        Ok(Some(d))
    }
}

/// A digest of the jobs' `.sql` files (names and contents) and the scoring
/// model's contents.
fn fingerprint(dir: &Path, scoring: &Path) -> std::io::Result<u64> {
    let mut files: Vec<PathBuf> = crate::jobs::files_with_extension(dir, "sql")?;
    files.sort();
    let mut h = crate::jobs::Fnv64::new();
    for f in files {
        h.write(f.as_os_str().as_encoded_bytes());
        h.write(&[0]);
        h.write(&std::fs::read(&f)?);
        h.write(&[0]);
    }
    h.write(&std::fs::read(scoring)?);
    Ok(h.finish())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn copy_jobs(to: &Path) {
        let from = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../jobs");
        std::fs::create_dir_all(to).unwrap();
        for e in std::fs::read_dir(&from).unwrap() {
            let p = e.unwrap().path();
            if p.extension().is_some_and(|x| x == "sql" || x == "toml") {
                std::fs::copy(&p, to.join(p.file_name().unwrap())).unwrap();
            }
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_valid_change_is_handed_over_and_broken_or_hidden_ones_are_refused() {
        let dir = std::env::temp_dir().join(format!("dw-reload-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        copy_jobs(&dir);
        let mut cfg = Config::defaults();
        cfg.jobs.dir = dir.clone();
        cfg.jobs.scoring = dir.join("scoring.toml");
        cfg.jobs.reload_interval = Duration::from_millis(50);
        let current = crate::worker::load_detector(&cfg).await.unwrap();
        let mut reloads = Reloads::watch(&cfg, &current).unwrap();
        let original = std::fs::read_to_string(dir.join("scoring.toml")).unwrap();
        let wait = |what: &str| {
            let _ = what;
            tokio::time::sleep(Duration::from_millis(600))
        };

        // A comment: nothing to reload.
        std::fs::write(dir.join("scoring.toml"), format!("# note\n{original}")).unwrap();
        wait("comment").await;
        assert!(reloads.try_next().is_none());
        // A weight changed under the same model_version: refused.
        let reweighted = original.replacen("weight = 0.15", "weight = 0.25", 1);
        assert_ne!(reweighted, original);
        std::fs::write(dir.join("scoring.toml"), &reweighted).unwrap();
        wait("hidden").await;
        assert!(reloads.try_next().is_none());
        // A rule on a feature no job makes: refused.
        let broken = original.replacen(
            "feature = \"cot_elicitation_share\"",
            "feature = \"no_such_feature\"",
            1,
        );
        std::fs::write(dir.join("scoring.toml"), broken).unwrap();
        wait("broken").await;
        assert!(reloads.try_next().is_none());
        // A new version of the model: handed over.
        let renamed = reweighted.replacen(
            "model_version = \"heuristic-",
            "model_version = \"reloaded-",
            1,
        );
        std::fs::write(dir.join("scoring.toml"), renamed).unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        let d = loop {
            if let Some(d) = reloads.try_next() {
                break d;
            }
            assert!(std::time::Instant::now() < deadline, "never reloaded");
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        assert!(
            d.model_version.starts_with("reloaded-"),
            "{}",
            d.model_version
        );
        // A job's SQL changed: a new jobs digest, handed over too.
        let sql = dir.join("volume.sql");
        let text = std::fs::read_to_string(&sql).unwrap();
        std::fs::write(&sql, format!("{text}\n-- a comment in the SQL\n")).unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        let e = loop {
            if let Some(e) = reloads.try_next() {
                break e;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "never reloaded the jobs"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        assert_ne!(e.model_version, d.model_version);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
