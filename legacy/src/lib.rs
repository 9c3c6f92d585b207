//! Raw-watch engine (`--legacy-watch`): events handled inline, in arrival order.
