//! How something outside a session's reconcile (a runner call that ended, a refused pod) makes
//! the session due again: the engine sets its way in once, when it starts; before that, a wake
//! is dropped (the engine's first pass looks at every session anyway).

use std::sync::{Arc, OnceLock};

use crate::cache::ObjectKey;

/// Wakes a key: the engine reconciles it again soon.
pub type Waker = Arc<dyn Fn(ObjectKey) + Send + Sync>;

/// The engine's waker, shared by whoever wakes sessions; cheap to clone.
#[derive(Clone, Default)]
pub struct SessionWaker(Arc<OnceLock<Waker>>);

impl SessionWaker {
    /// Sets the engine's way in (the first call wins).
    pub fn set(&self, waker: Waker) {
        let _ = self.0.set(waker);
    }

    /// Makes `namespace/name` due again.
    pub fn wake(&self, namespace: &str, name: &str) {
        if let Some(wake) = self.0.get() {
            wake(ObjectKey::Session {
                namespace: namespace.to_string(),
                name: name.to_string(),
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[test]
    fn wakes_go_to_the_engine_once_it_is_set() {
        let waker = SessionWaker::default();
        waker.wake("ns", "early"); // dropped: no engine yet
        let woken = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&woken);
        waker
            .clone()
            .set(Arc::new(move |key| sink.lock().unwrap().push(key)));
        waker.wake("ns", "s");
        assert_eq!(
            *woken.lock().unwrap(),
            vec![ObjectKey::Session {
                namespace: "ns".into(),
                name: "s".into()
            }]
        );
    }
}
