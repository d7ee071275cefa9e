//! What a run found, for the user to print or assert on.

use crate::checker::Verdict;
use crate::history::History;
use crate::nemesis::FaultRecord;
use crate::world::OperationCounts;
use std::fmt;
use std::time::Duration;

/// What one run of a [`crate::Simulation`] did and found. `Display` prints all of it: a
/// summary, any problems with the shortest failing part of the history, the faults, and the
/// command that replays the run.
#[derive(Clone, Debug)]
pub struct Report<Op, Ret> {
    /// The seed the run was made from.
    pub seed: u64,
    /// Simulated time the run took, in milliseconds.
    pub simulated_ms: u64,
    /// Real time the run took.
    pub wall: Duration,
    /// Writes, by outcome.
    pub writes: OperationCounts,
    /// Reads, by outcome.
    pub reads: OperationCounts,
    /// Terms in which a leader was seen.
    pub elections: u64,
    /// Every term a node was seen in, in order, with its leader if one was seen: for checks of
    /// your own, such as that a healthy cluster keeps its first leader.
    pub terms: Vec<crate::TermRecord>,
    /// Times a node started (the first starts included).
    pub node_starts: u64,
    /// Membership changes asked for ([`crate::Fault::MembershipChange`]), by outcome.
    pub membership_changes: OperationCounts,
    /// Membership changes that took effect and removed from the voters the leader that made
    /// them (which then handed over leadership).
    pub leader_removals: u64,
    /// Leadership transfers asked for ([`crate::Fault::TransferLeadership`]), by outcome: `ok`
    /// when the leader started the transfer.
    pub leadership_transfers: OperationCounts,
    /// Transfers started whose target was then seen leading a later term within 1 s.
    pub transfers_completed: u64,
    /// The voters of the settled membership the liveness check found after the faults
    /// stopped; empty when it found none (then a liveness problem says so).
    pub final_voters: Vec<raft_core::NodeId>,
    /// The writes acknowledged at `Ack::Quorum` or `Ack::All` that the store audit looked for
    /// on the final voters' stores once the run was over (any it did not find on a majority is
    /// a problem); `None` when the audit did not run, because the cluster never settled (a
    /// liveness problem says so).
    pub audited_writes: Option<u64>,
    /// `Consistency::BoundedStaleness` reads answered, each checked against its bound.
    pub bounded_reads: u64,
    /// Reads answered by a node that was not leading when the answer came (a follower's own
    /// `Stale`, `BoundedStaleness` or `AtLeast` read, or a read it forwarded to the leader):
    /// for tests that mean reads to reach followers.
    pub follower_reads: u64,
    /// Every fault injected and undone, and every membership change and leadership transfer
    /// asked for, in order of time.
    pub faults: Vec<FaultRecord>,
    /// Everything found wrong; empty when the run passed.
    pub problems: Vec<String>,
    /// Settings that make a run less useful than it could be (see
    /// [`crate::Simulation::latency`]).
    pub warnings: Vec<String>,
    /// The linearizability verdict on the history.
    pub linearizability: Verdict<Op, Ret>,
    /// Every operation the clients made.
    pub history: History<Op, Ret>,
    /// A digest of the history (operations, outcomes, times) and the faults: the same seed
    /// gives the same digest.
    pub digest: u64,
    /// The command that runs this seed again.
    pub replay: String,
}

impl<Op, Ret> Report<Op, Ret> {
    /// Whether the run found nothing wrong.
    pub fn is_ok(&self) -> bool {
        self.problems.is_empty()
    }

    /// One line: the seed, operations by outcome, elections, faults, time.
    pub fn summary(&self) -> String {
        let injected = self.faults.iter().filter(|f| f.fault.is_some()).count();
        format!(
            "seed {}: writes {} ok / {} refused / {} unknown, reads {} ok / {} refused / {} \
             unknown; {} elections, {} faults, {} node starts; {} ms simulated in {:.2?}; \
             digest {:016x}",
            self.seed,
            self.writes.ok,
            self.writes.failed,
            self.writes.unknown,
            self.reads.ok,
            self.reads.failed,
            self.reads.unknown,
            self.elections,
            injected,
            self.node_starts,
            self.simulated_ms,
            self.wall,
            self.digest
        ) + &self.churn_summary()
            + &self.transfer_summary()
            + &self.checks_summary()
    }

    /// The leadership transfers, when any was asked for.
    fn transfer_summary(&self) -> String {
        let transfers = self.leadership_transfers;
        if transfers.ok + transfers.failed + transfers.unknown == 0 {
            return String::new();
        }
        format!(
            "; leadership transfers {} started / {} refused / {} unknown ({} completed)",
            transfers.ok, transfers.failed, transfers.unknown, self.transfers_completed
        )
    }

    /// The end-of-run checks whose counts are not in the rest of the line.
    fn checks_summary(&self) -> String {
        let mut summary = String::new();
        if self.follower_reads > 0 {
            summary += &format!("; {} reads answered by followers", self.follower_reads);
        }
        if self.bounded_reads > 0 {
            summary += &format!("; {} bounded-staleness reads", self.bounded_reads);
        }
        match self.audited_writes {
            Some(writes) => summary += &format!("; {writes} acknowledged writes audited"),
            None => summary += "; no store audit",
        }
        summary
    }

    /// The membership changes, when any was asked for.
    fn churn_summary(&self) -> String {
        let changes = self.membership_changes;
        if changes.ok + changes.failed + changes.unknown == 0 {
            return String::new();
        }
        format!(
            "; membership changes {} ok / {} refused / {} unknown ({} removed the leader), \
             final voters {:?}",
            changes.ok,
            changes.failed,
            changes.unknown,
            self.leader_removals,
            self.final_voters.iter().map(|id| id.0).collect::<Vec<_>>()
        )
    }
}

impl<Op: fmt::Debug, Ret: fmt::Debug> fmt::Display for Report<Op, Ret> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{}", self.summary())?;
        for warning in &self.warnings {
            writeln!(f, "warning: {warning}")?;
        }
        if self.problems.is_empty() {
            writeln!(f, "no problem found")?;
        } else {
            writeln!(f, "{} problem(s):", self.problems.len())?;
            for problem in &self.problems {
                writeln!(f, "- {}", problem.trim_end())?;
            }
        }
        writeln!(f, "faults:")?;
        for fault in &self.faults {
            writeln!(f, "  {fault}")?;
        }
        write!(f, "replay: {}", self.replay)
    }
}
