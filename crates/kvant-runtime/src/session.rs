use crate::{Plan, RuntimeError, ValueHook};
use kvant_graph::{Dim, Model};
use kvant_tensor::Tensor;

/// The outputs of a profiled run (named, in graph order) and the time of every step.
pub type ProfiledRun = (Vec<(String, Tensor)>, Vec<crate::StepTime>);

/// How a [`Session`] runs.
#[derive(Debug, Clone)]
pub struct SessionOptions {
    /// Worker threads for kernels; 0 means one per available core.
    pub threads: usize,
    /// Apply inference rewrites before planning (BatchNormalization folded into Conv, dead
    /// nodes removed; see [`kvant_graph::passes::optimize_for_inference`]). Values that a
    /// rewrite removes (a Conv's pre-BatchNormalization output) are then not seen by hooks.
    pub optimize: bool,
}

impl Default for SessionOptions {
    fn default() -> SessionOptions {
        SessionOptions {
            threads: 0,
            optimize: true,
        }
    }
}

impl SessionOptions {
    /// Default options with a thread count.
    pub fn with_threads(threads: usize) -> SessionOptions {
        SessionOptions {
            threads,
            ..SessionOptions::default()
        }
    }
}

/// A planned model plus the thread pool that runs it.
pub struct Session {
    plan: Plan,
    pool: rayon::ThreadPool,
    threads: usize,
}

impl Session {
    /// Plans a model with default options.
    pub fn new(model: &Model) -> Result<Session, RuntimeError> {
        Session::with_options(model, &SessionOptions::default())
    }

    /// Plans a model.
    pub fn with_options(model: &Model, options: &SessionOptions) -> Result<Session, RuntimeError> {
        let threads = if options.threads == 0 {
            std::thread::available_parallelism().map_or(1, |n| n.get())
        } else {
            options.threads
        };
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .map_err(|e| crate::kernel_err(format!("cannot start {threads} threads: {e}")))?;
        // Planning folds constants, which runs kernels: do it on the same pool.
        let plan = if options.optimize {
            let mut optimized = model.clone();
            kvant_graph::passes::optimize_for_inference(&mut optimized);
            pool.install(|| Plan::new(&optimized))?
        } else {
            pool.install(|| Plan::new(model))?
        };
        Ok(Session {
            plan,
            pool,
            threads,
        })
    }

    /// The plan.
    pub fn plan(&self) -> &Plan {
        &self.plan
    }

    /// Number of worker threads.
    pub fn threads(&self) -> usize {
        self.threads
    }

    /// Runs the model on named inputs; returns the outputs with their names, in graph order.
    pub fn run(&self, feeds: &[(String, Tensor)]) -> Result<Vec<(String, Tensor)>, RuntimeError> {
        self.run_inner(feeds, None)
    }

    /// Runs the model and lets `hook` see (and replace) every value produced.
    pub fn run_with_hook(
        &self,
        feeds: &[(String, Tensor)],
        hook: &mut dyn ValueHook,
    ) -> Result<Vec<(String, Tensor)>, RuntimeError> {
        self.run_inner(feeds, Some(hook))
    }

    /// Runs the model and returns, besides the outputs, the time each step took.
    pub fn run_profiled(&self, feeds: &[(String, Tensor)]) -> Result<ProfiledRun, RuntimeError> {
        let ordered = self.order_feeds(feeds)?;
        let mut profile = Vec::new();
        let outputs = self
            .pool
            .install(|| self.plan.run_profiled(&ordered, &mut profile))?;
        let named = self
            .plan
            .output_names()
            .map(str::to_string)
            .zip(outputs)
            .collect();
        Ok((named, profile))
    }

    fn run_inner(
        &self,
        feeds: &[(String, Tensor)],
        hook: Option<&mut dyn ValueHook>,
    ) -> Result<Vec<(String, Tensor)>, RuntimeError> {
        let ordered = self.order_feeds(feeds)?;
        let outputs = self.pool.install(|| self.plan.run(&ordered, hook))?;
        Ok(self
            .plan
            .output_names()
            .map(str::to_string)
            .zip(outputs)
            .collect())
    }

    /// Matches feeds to the declared inputs and checks their types and shapes.
    fn order_feeds<'a>(
        &self,
        feeds: &'a [(String, Tensor)],
    ) -> Result<Vec<&'a Tensor>, RuntimeError> {
        let expected: Vec<&str> = self.plan.inputs().map(|i| i.name.as_str()).collect();
        for (name, _) in feeds {
            if !expected.contains(&name.as_str()) {
                return Err(RuntimeError::Input {
                    name: name.clone(),
                    reason: format!(
                        "the model has no such input (inputs: {})",
                        expected.join(", ")
                    ),
                });
            }
        }
        let mut ordered = Vec::with_capacity(expected.len());
        for info in self.plan.inputs() {
            let tensor = feeds
                .iter()
                .find(|(n, _)| *n == info.name)
                .map(|(_, t)| t)
                .ok_or_else(|| RuntimeError::Input {
                    name: info.name.clone(),
                    reason: "missing: no value was given for it".into(),
                })?;
            let bad = |reason: String| RuntimeError::Input {
                name: info.name.clone(),
                reason,
            };
            if let Some(dtype) = info.dtype() {
                if dtype != tensor.dtype() {
                    return Err(bad(format!(
                        "expected element type {dtype}, got {}",
                        tensor.dtype()
                    )));
                }
            }
            if let Some(shape) = info.shape() {
                if shape.len() != tensor.rank() {
                    return Err(bad(format!(
                        "expected rank {} (shape {}), got shape {:?}",
                        shape.len(),
                        format_dims(&shape),
                        tensor.shape()
                    )));
                }
                for (axis, (d, &got)) in shape.iter().zip(tensor.shape()).enumerate() {
                    if let Dim::Fixed(want) = d {
                        if *want >= 0 && *want as usize != got {
                            return Err(bad(format!(
                                "dimension {axis} must be {want} (shape {}), got shape {:?}",
                                format_dims(&shape),
                                tensor.shape()
                            )));
                        }
                    }
                }
            }
            ordered.push(tensor);
        }
        Ok(ordered)
    }
}

/// Shows a declared shape as `[1, 3, height, ?]`.
pub fn format_dims(dims: &[Dim]) -> String {
    let parts: Vec<String> = dims
        .iter()
        .map(|d| match d {
            Dim::Fixed(v) => v.to_string(),
            Dim::Symbolic(s) => s.clone(),
            Dim::Unknown => "?".into(),
        })
        .collect();
    format!("[{}]", parts.join(", "))
}
