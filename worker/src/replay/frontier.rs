//! The ordered frontier of a replay with several writers: the reader numbers its pages in key
//! order, writers commit them in any order, and the frontier is the end of the unbroken prefix
//! of committed pages: every event up to it is done, so the cursor may move there (see
//! `cursor.rs`), while a page committed beyond a gap waits for the gap to close. A pure
//! structure: the caller says what it read and what committed.

use std::collections::VecDeque;

/// Pages read in order and committed in any order; see the module documentation. `P` is
/// where a page ends.
#[derive(Debug)]
pub(crate) struct Frontier<P> {
    /// The number of the oldest page not yet behind the frontier.
    first: u64,
    /// From `first` on, in order: each page's end, and whether it is committed.
    pages: VecDeque<(P, bool)>,
}

impl<P> Default for Frontier<P> {
    fn default() -> Self {
        Self {
            first: 0,
            pages: VecDeque::new(),
        }
    }
}

impl<P> Frontier<P> {
    /// Numbers the next page read, which ends at `end`.
    pub(crate) fn push(&mut self, end: P) -> u64 {
        let number = self.first + self.pages.len() as u64;
        self.pages.push_back((end, false));
        number
    }

    /// Marks page `number` committed; returns the new frontier when it moved: the end of the
    /// last page of the unbroken committed prefix. An unknown number changes nothing.
    pub(crate) fn commit(&mut self, number: u64) -> Option<P> {
        let index = usize::try_from(number.checked_sub(self.first)?).ok()?;
        if let Some((_, committed)) = self.pages.get_mut(index) {
            *committed = true;
        }
        let mut moved = None;
        while self.pages.front().is_some_and(|(_, committed)| *committed) {
            moved = self.pages.pop_front().map(|(end, _)| end);
            self.first += 1;
        }
        moved
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_committed_in_order_move_the_frontier_each_time() {
        let mut frontier = Frontier::default();
        let (a, b) = (frontier.push("a"), frontier.push("b"));
        assert_eq!((a, b), (0, 1));
        assert_eq!(frontier.commit(a), Some("a"));
        assert_eq!(frontier.commit(b), Some("b"));
        assert_eq!(frontier.push("c"), 2, "numbers go on");
    }

    #[test]
    fn pages_committed_out_of_order_move_it_only_over_the_unbroken_prefix() {
        let mut frontier = Frontier::default();
        let pages: Vec<u64> = (1..=5).map(|end| frontier.push(end)).collect();
        // 2 and 4 commit first: 1 is still in progress, nothing moves.
        assert_eq!(frontier.commit(pages[1]), None);
        assert_eq!(frontier.commit(pages[3]), None);
        // 1 commits: the frontier passes 1 and 2, and stops at the gap of 3.
        assert_eq!(frontier.commit(pages[0]), Some(2));
        assert_eq!(frontier.commit(pages[1]), None, "already behind it");
        // 5 then 3: over 3, 4 and 5 at once.
        assert_eq!(frontier.commit(pages[4]), None);
        assert_eq!(frontier.commit(pages[2]), Some(5));
        assert_eq!(frontier.push(6), 5, "numbers go on");
        assert_eq!(frontier.commit(5), Some(6));
    }

    #[test]
    fn a_page_already_behind_the_frontier_or_never_read_changes_nothing() {
        let mut frontier = Frontier::default();
        let first = frontier.push("a");
        assert_eq!(frontier.commit(first), Some("a"));
        assert_eq!(frontier.commit(first), None, "committed twice");
        assert_eq!(frontier.commit(7), None, "never read");
        let second = frontier.push("b");
        assert_eq!(frontier.commit(second), Some("b"));
    }

    #[test]
    fn a_page_waiting_for_a_retry_holds_back_every_later_one() {
        let mut frontier = Frontier::default();
        let pages: Vec<u64> = (0..4).map(|end| frontier.push(end)).collect();
        assert_eq!(frontier.commit(pages[0]), Some(0));
        // Page 1 failed and waits for its retry; 2 and 3 commit meanwhile.
        assert_eq!(frontier.commit(pages[2]), None);
        assert_eq!(frontier.commit(pages[3]), None);
        assert_eq!(frontier.commit(pages[1]), Some(3));
    }
}
