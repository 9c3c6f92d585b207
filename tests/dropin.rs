//! The drop-in scenarios (tests/scenarios/dropin.rs, SPEC §7) under the work-queue engine, on
//! this project's CRDs: failures shown as fast and as clearly as the original showed them
//! (an image that cannot be pulled, a missing configuration key, a quota or an admission policy
//! refusing the pod), runner pods admitted under OpenShift's restricted-v2 SCC
//! (`cluster/policies/restricted-v2.yaml`), an invalid edit while Running refused as an edit,
//! and sessions the original operator started carried through the switch.
//! tests/dropin_legacy.rs runs them under `--legacy-watch`; the backend's journey (330 s) runs
//! on the platform's installation (tests/platform_crd.rs).

mod support;

use support::operator::Engine;

const ENGINE: Engine = Engine::Queue;

include!("scenarios/dropin.rs");
