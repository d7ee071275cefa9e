//! The register rules on small parts written out by hand: each rule decides what it must, and
//! nothing else.

use super::*;

/// `Some` text, as a register value.
fn text(value: &str) -> Option<Vec<u8>> {
    Some(value.as_bytes().to_vec())
}

fn write(value: &str, invoked: u64, returned: Option<u64>) -> Access {
    Access {
        register: Register::Write(text(value)),
        invoke_event: invoked,
        return_event: returned,
    }
}

fn read(value: Option<&str>, invoked: u64, returned: u64) -> Access {
    Access {
        register: Register::Read(value.and_then(text)),
        invoke_event: invoked,
        return_event: Some(returned),
    }
}

#[test]
fn rule_1_refutes_a_read_of_a_value_written_only_after_it_returned() {
    let part = vec![read(Some("a"), 0, 1), write("a", 2, Some(3))];
    assert_eq!(
        refute(&part),
        Some(Refuted::Unwritten {
            reader: 0,
            value: b"a".to_vec()
        })
    );
    // Written by an operation invoked before the read returned, even one of unknown outcome:
    // left to the search.
    let concurrent = vec![write("a", 0, None), read(Some("a"), 1, 2)];
    assert_eq!(unwritten_value(&concurrent), None);
}

#[test]
fn rule_1_does_not_count_a_swap_as_its_own_writer() {
    let swap = Access {
        register: Register::Swap {
            expect: text("a"),
            new: text("a"),
        },
        invoke_event: 0,
        return_event: Some(1),
    };
    assert!(matches!(
        unwritten_value(&[swap]),
        Some(Refuted::Unwritten { reader: 0, .. })
    ));
}

#[test]
fn rule_1_leaves_absent_to_the_search() {
    // Absent is held at the start: a read of it needs no writer.
    assert_eq!(refute(&[read(None, 0, 1)]), None);
}

#[test]
fn rule_2_refutes_a_stale_read_of_values_written_once() {
    // Put "a", read "a", put "b", read "b", read "a" again: "a" is held before "b" and after.
    let part = vec![
        write("a", 0, Some(1)),
        read(Some("a"), 2, 3),
        write("b", 4, Some(5)),
        read(Some("b"), 6, 7),
        read(Some("a"), 8, 9),
    ];
    assert_eq!(unwritten_value(&part), None);
    match value_held_twice(&part) {
        Some(Refuted::HeldTwice { first, second }) => {
            let mut values = [first.value, second.value];
            values.sort();
            assert_eq!(values, [b"a".to_vec(), b"b".to_vec()]);
        }
        other => panic!("expected two values held twice, got {other:?}"),
    }
}

#[test]
fn rule_2_leaves_values_written_twice_to_the_search() {
    // With a second put of "a" after "b", reading "a" again is legal.
    let part = vec![
        write("a", 0, Some(1)),
        write("b", 2, Some(3)),
        read(Some("b"), 4, 5),
        write("a", 6, None),
        read(Some("a"), 8, 9),
    ];
    assert_eq!(refute(&part), None);
}

#[test]
fn rule_2_counts_the_only_writer_of_a_value_read_even_of_unknown_outcome() {
    // "a" (unknown outcome) must have taken effect for the reads of it; "b" was read between
    // them, after "b"'s write returned: "a" held before "b" and after.
    let part = vec![
        write("a", 0, None),
        read(Some("a"), 1, 2),
        write("b", 3, Some(4)),
        read(Some("b"), 5, 6),
        read(Some("a"), 7, 8),
    ];
    assert!(matches!(
        value_held_twice(&part),
        Some(Refuted::HeldTwice { .. })
    ));
}

#[test]
fn rule_2_accepts_concurrent_stretches() {
    // The read of "a" overlaps the write of "b": "a" may be held first, then "b".
    let part = vec![
        write("a", 0, Some(1)),
        write("b", 2, Some(5)),
        read(Some("a"), 3, 6),
        read(Some("b"), 7, 8),
    ];
    assert_eq!(refute(&part), None);
}

#[test]
fn rule_3_drops_unknown_operations_that_change_nothing_or_leave_a_value_nobody_needs() {
    let part = vec![
        // Unknown, "a" read later: kept.
        write("a", 0, None),
        // Unknown, "b" never needed: dropped.
        write("b", 1, None),
        // Returned: kept, though nothing needs "c".
        write("c", 2, Some(3)),
        // Unknown read: dropped.
        Access {
            register: Register::Nothing,
            invoke_event: 4,
            return_event: None,
        },
        // Unknown delete; nothing needs absent: dropped.
        Access {
            register: Register::Write(None),
            invoke_event: 5,
            return_event: None,
        },
        // Unknown swap from "a" to "d", "d" never needed: dropped.
        Access {
            register: Register::Swap {
                expect: text("a"),
                new: text("d"),
            },
            invoke_event: 6,
            return_event: None,
        },
        read(Some("a"), 7, 8),
    ];
    assert_eq!(
        droppable(&part),
        vec![false, true, false, true, true, true, false]
    );
    // A swap's expected value counts as needed, even one of unknown outcome.
    let needed_by_swap = vec![
        write("b", 0, None),
        Access {
            register: Register::Swap {
                expect: text("b"),
                new: text("e"),
            },
            invoke_event: 1,
            return_event: None,
        },
    ];
    assert_eq!(droppable(&needed_by_swap), vec![false, true]);
}

#[test]
fn values_print_as_text_bytes_or_absent() {
    assert_eq!(show(None), "absent");
    assert_eq!(show(Some(b"a")), "\"a\"");
    assert_eq!(show(Some(&[0xff])), "[255]");
}
