//! Workspace-level tests: turmoil simulations of whole clusters running the async node over the
//! real transports. The pure protocol's own simulator lives in `raft-core`'s tests.
