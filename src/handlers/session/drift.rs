//! Live changes (SPEC §5.6), the pure part: what a Running session's runner must be told when
//! its spec moved past `status.observedGeneration`, and what the status records once it has
//! been (or could not be).
//!
//! Invariants: repositories are compared by URL after deduplicating the spec (the last entry of
//! a URL wins, branch default `main`); calls come in a fixed order — additions and branch
//! changes in spec order, then removals in the order the status lists them, then the workflow;
//! `reconciledRepos`, `reconciledWorkflow` and `observedGeneration` are written together and
//! only when every call succeeded (the original wrote them as `Ready` whatever happened, in
//! random order).

use agentic_crds::session::{
    ActiveWorkflow, DEFAULT_BRANCH, ReconciledRepo, ReconciledWorkflow, RepoCloneStatus,
    WorkflowStatus,
};
use agentic_crds::{AgenticSessionSpec, AgenticSessionStatus};
use serde_json::json;

/// One call to the runner's HTTP API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunnerCall {
    /// `POST /repos/add {url, branch, name}`: a repository added, or its branch changed.
    AddRepo {
        /// Repository URL.
        url: String,
        /// Branch.
        branch: String,
        /// Directory name in the workspace.
        name: String,
    },
    /// `POST /repos/remove {name}`: a repository removed.
    RemoveRepo {
        /// Directory name in the workspace.
        name: String,
    },
    /// `POST /workflow {gitUrl, branch, path}`: the active workflow switched.
    Workflow {
        /// Workflow repository URL.
        git_url: String,
        /// Branch.
        branch: String,
        /// Path inside the repository.
        path: String,
    },
}

impl RunnerCall {
    /// The path of the call on the runner.
    pub fn path(&self) -> &'static str {
        match self {
            RunnerCall::AddRepo { .. } => "/repos/add",
            RunnerCall::RemoveRepo { .. } => "/repos/remove",
            RunnerCall::Workflow { .. } => "/workflow",
        }
    }

    /// The JSON body of the call.
    pub fn body(&self) -> serde_json::Value {
        match self {
            RunnerCall::AddRepo { url, branch, name } => {
                json!({"url": url, "branch": branch, "name": name})
            }
            RunnerCall::RemoveRepo { name } => json!({"name": name}),
            RunnerCall::Workflow {
                git_url,
                branch,
                path,
            } => json!({"gitUrl": git_url, "branch": branch, "path": path}),
        }
    }

    /// Whether the call is about the workflow (else about repositories).
    pub fn is_workflow(&self) -> bool {
        matches!(self, RunnerCall::Workflow { .. })
    }
}

/// The directory name of a repository: the last path segment of its URL, without `.git`.
pub fn repo_name(url: &str) -> String {
    let trimmed = url.trim_end_matches('/');
    let last = trimmed.rsplit(['/', ':']).next().unwrap_or(trimmed);
    last.trim_end_matches(".git").to_string()
}

/// What the workflow should become.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WorkflowChange {
    /// Unchanged.
    Same,
    /// Switched (the call was made): record it as active.
    Set {
        /// URL.
        git_url: String,
        /// Branch.
        branch: String,
        /// Path.
        path: String,
    },
    /// Removed from the spec: clear `reconciledWorkflow` (no call).
    Cleared,
}

/// The difference between a spec and what the runner was last told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Drift {
    /// The calls to make, in order.
    pub calls: Vec<RunnerCall>,
    /// The spec's repositories, deduplicated (`url`, `branch`, `name`), in spec order.
    pub repos: Vec<(String, String, String)>,
    /// Repositories added, branches changed, removed.
    pub counts: (usize, usize, usize),
    /// The workflow's change.
    pub workflow: WorkflowChange,
}

/// The drift of `spec` from `status`.
pub fn drift(spec: &AgenticSessionSpec, status: &AgenticSessionStatus) -> Drift {
    let repos: Vec<(String, String, String)> = spec
        .unique_repos()
        .into_iter()
        .map(|r| {
            let name = repo_name(&r.url);
            (r.url, r.branch, name)
        })
        .collect();
    let reconciled: Vec<&ReconciledRepo> = status.reconciled_repos.iter().flatten().collect();
    let mut calls = Vec::new();
    let (mut added, mut changed, mut removed) = (0, 0, 0);
    for (url, branch, name) in &repos {
        match reconciled.iter().find(|r| r.url.as_deref() == Some(url)) {
            None => added += 1,
            Some(r) if r.branch.as_deref().unwrap_or(DEFAULT_BRANCH) != branch => changed += 1,
            Some(_) => continue,
        }
        calls.push(RunnerCall::AddRepo {
            url: url.clone(),
            branch: branch.clone(),
            name: name.clone(),
        });
    }
    for r in &reconciled {
        let Some(url) = r.url.as_deref() else {
            continue;
        };
        if !repos.iter().any(|(u, _, _)| u == url) {
            removed += 1;
            calls.push(RunnerCall::RemoveRepo {
                name: r.name.clone().unwrap_or_else(|| repo_name(url)),
            });
        }
    }
    let workflow = workflow_change(
        spec.active_workflow.as_ref(),
        status.reconciled_workflow.as_ref(),
    );
    if let WorkflowChange::Set {
        git_url,
        branch,
        path,
    } = &workflow
    {
        calls.push(RunnerCall::Workflow {
            git_url: git_url.clone(),
            branch: branch.clone(),
            path: path.clone(),
        });
    }
    Drift {
        calls,
        repos,
        counts: (added, changed, removed),
        workflow,
    }
}

fn workflow_change(
    wanted: Option<&ActiveWorkflow>,
    reconciled: Option<&ReconciledWorkflow>,
) -> WorkflowChange {
    let wanted = wanted.and_then(|w| {
        let url = w
            .git_url
            .as_deref()
            .map(str::trim)
            .filter(|u| !u.is_empty())?;
        let branch = if w.branch.trim().is_empty() {
            DEFAULT_BRANCH
        } else {
            &w.branch
        };
        Some((
            url.to_string(),
            branch.to_string(),
            w.path.clone().unwrap_or_default(),
        ))
    });
    match (wanted, reconciled) {
        (None, None) => WorkflowChange::Same,
        (None, Some(_)) => WorkflowChange::Cleared,
        (Some((git_url, branch, path)), current) => {
            let same = current.is_some_and(|c| {
                c.git_url.as_deref() == Some(git_url.as_str())
                    && c.branch.as_deref().unwrap_or(DEFAULT_BRANCH) == branch
                    && c.path.clone().unwrap_or_default() == path
            });
            if same {
                WorkflowChange::Same
            } else {
                WorkflowChange::Set {
                    git_url,
                    branch,
                    path,
                }
            }
        }
    }
}

/// `status.reconciledRepos` once every call succeeded (`now`: RFC 3339).
pub fn reconciled_repos(drift: &Drift, now: &str) -> Option<Vec<ReconciledRepo>> {
    if drift.repos.is_empty() {
        return None;
    }
    Some(
        drift
            .repos
            .iter()
            .map(|(url, branch, name)| ReconciledRepo {
                url: Some(url.clone()),
                branch: Some(branch.clone()),
                name: Some(name.clone()),
                status: Some(RepoCloneStatus::Ready),
                cloned_at: Some(now.to_string()),
                ..Default::default()
            })
            .collect(),
    )
}

/// `status.reconciledWorkflow` after `change` (`current` when unchanged).
pub fn reconciled_workflow(
    change: &WorkflowChange,
    current: Option<&ReconciledWorkflow>,
    now: &str,
) -> Option<ReconciledWorkflow> {
    match change {
        WorkflowChange::Same => current.cloned(),
        WorkflowChange::Cleared => None,
        WorkflowChange::Set {
            git_url,
            branch,
            path,
        } => Some(ReconciledWorkflow {
            git_url: Some(git_url.clone()),
            branch: Some(branch.clone()),
            path: (!path.is_empty()).then(|| path.clone()),
            status: Some(WorkflowStatus::Active),
            applied_at: Some(now.to_string()),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use agentic_crds::session::RepoSpec;

    fn repo(url: &str, branch: &str) -> RepoSpec {
        RepoSpec {
            url: url.into(),
            branch: branch.into(),
            auto_push: false,
        }
    }

    fn reconciled(url: &str, branch: &str) -> ReconciledRepo {
        ReconciledRepo {
            url: Some(url.into()),
            branch: Some(branch.into()),
            name: Some(repo_name(url)),
            status: Some(RepoCloneStatus::Ready),
            ..Default::default()
        }
    }

    #[test]
    fn names_are_the_last_path_segment_without_dot_git() {
        assert_eq!(repo_name("https://github.com/a/b.git"), "b");
        assert_eq!(repo_name("https://github.com/a/b/"), "b");
        assert_eq!(repo_name("git@github.com:a/c.git"), "c");
    }

    #[test]
    fn additions_branch_changes_and_removals_come_in_a_fixed_order() {
        let spec = AgenticSessionSpec {
            repos: vec![
                repo("https://x/new.git", "main"),
                repo("https://x/moved.git", "dev"),
                repo("https://x/kept.git", "main"),
                repo("https://x/new.git", "feature"), // the last entry of a URL wins
            ],
            ..Default::default()
        };
        let status = AgenticSessionStatus {
            reconciled_repos: Some(vec![
                reconciled("https://x/moved.git", "main"),
                reconciled("https://x/kept.git", "main"),
                reconciled("https://x/gone.git", "main"),
            ]),
            ..Default::default()
        };
        let d = drift(&spec, &status);
        assert_eq!(
            d.calls,
            vec![
                RunnerCall::AddRepo {
                    url: "https://x/new.git".into(),
                    branch: "feature".into(),
                    name: "new".into()
                },
                RunnerCall::AddRepo {
                    url: "https://x/moved.git".into(),
                    branch: "dev".into(),
                    name: "moved".into()
                },
                RunnerCall::RemoveRepo {
                    name: "gone".into()
                },
            ]
        );
        assert_eq!(d.counts, (1, 1, 1));
        assert_eq!(d.repos.len(), 3);
    }

    #[test]
    fn a_switched_workflow_is_a_call_and_a_removed_one_is_only_cleared() {
        let mut spec = AgenticSessionSpec {
            active_workflow: Some(ActiveWorkflow {
                git_url: Some("https://x/wf.git".into()),
                branch: "main".into(),
                path: Some("flows/a".into()),
            }),
            ..Default::default()
        };
        let status = AgenticSessionStatus::default();
        let d = drift(&spec, &status);
        assert_eq!(
            d.calls,
            vec![RunnerCall::Workflow {
                git_url: "https://x/wf.git".into(),
                branch: "main".into(),
                path: "flows/a".into()
            }]
        );
        let applied = reconciled_workflow(&d.workflow, None, "t").unwrap();
        let mut after = status.clone();
        after.reconciled_workflow = Some(applied);
        assert_eq!(drift(&spec, &after).workflow, WorkflowChange::Same);
        spec.active_workflow = None;
        let cleared = drift(&spec, &after);
        assert!(cleared.calls.is_empty());
        assert_eq!(cleared.workflow, WorkflowChange::Cleared);
    }

    #[test]
    fn bodies_are_what_the_runner_reads() {
        let add = RunnerCall::AddRepo {
            url: "u".into(),
            branch: "b".into(),
            name: "n".into(),
        };
        assert_eq!(add.body(), json!({"url": "u", "branch": "b", "name": "n"}));
        assert_eq!(add.path(), "/repos/add");
        let wf = RunnerCall::Workflow {
            git_url: "g".into(),
            branch: "b".into(),
            path: "p".into(),
        };
        assert_eq!(
            wf.body(),
            json!({"gitUrl": "g", "branch": "b", "path": "p"})
        );
    }
}
