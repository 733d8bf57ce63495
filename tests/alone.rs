//! Tests that time how promptly the hub answers while it is under attack. They get a binary of
//! their own so that no other test shares the machine's cores with them: cargo runs test binaries
//! one after another, so the only load on the hub here is the load the test makes.
#![expect(clippy::unwrap_used, reason = "tests fail loudly")]

mod util;

mod brute_force;
