//! A rank's paged KV cache on the host side: which blocks of the pool each running sequence
//! holds (its row of the block table) and which are free.
//!
//! A request gets the blocks its prompt + `max_tokens` need when it starts, and gives them
//! back when it ends, so the pool holds what the requests running now need rather than a
//! reservation for the longest possible sequence in every slot. (Blocks are taken whole at
//! admission, so a running sequence never waits for memory and nothing is preempted.) The
//! same calls in the same order give the same table, which keeps a replica's TP ranks alike.

use finetp_core::decoder::KvLayout;

pub(crate) struct BlockPool {
    layout: KvLayout,
    /// `[slots, max_blocks]` row-major; rows of free slots point at block 0 (never read).
    table: Vec<u32>,
    free_blocks: Vec<u32>,
    free_slots: Vec<usize>,
    /// Blocks held by each slot.
    held: Vec<Vec<u32>>,
}

impl BlockPool {
    pub(crate) fn new(layout: KvLayout) -> Self {
        Self {
            table: vec![0; layout.slots * layout.max_blocks],
            // Popped from the back: blocks 0, 1, 2, … first.
            free_blocks: (0..layout.blocks as u32).rev().collect(),
            free_slots: (0..layout.slots).rev().collect(),
            held: vec![Vec::new(); layout.slots],
            layout,
        }
    }

    pub(crate) fn layout(&self) -> KvLayout {
        self.layout
    }

    pub(crate) fn table(&self) -> &[u32] {
        &self.table
    }

    pub(crate) fn blocks_for(&self, tokens: usize) -> usize {
        tokens.max(1).div_ceil(self.layout.block_size)
    }

    /// Whether a sequence of `tokens` could ever run here (with the whole pool free).
    pub(crate) fn could_hold(&self, tokens: usize) -> bool {
        let need = self.blocks_for(tokens);
        need <= self.layout.blocks && need <= self.layout.max_blocks && self.layout.slots > 0
    }

    pub(crate) fn used_blocks(&self) -> usize {
        self.layout.blocks - self.free_blocks.len()
    }

    /// A slot with blocks for `tokens` rows, if a slot and enough blocks are free.
    pub(crate) fn admit(&mut self, tokens: usize) -> Option<usize> {
        let need = self.blocks_for(tokens);
        if need > self.layout.max_blocks || need > self.free_blocks.len() {
            return None;
        }
        let slot = self.free_slots.pop()?;
        let blocks: Vec<u32> = (0..need).map(|_| self.free_blocks.pop().expect("counted above")).collect();
        let row = &mut self.table[slot * self.layout.max_blocks..(slot + 1) * self.layout.max_blocks];
        row[..need].copy_from_slice(&blocks);
        self.held[slot] = blocks;
        Some(slot)
    }

    /// Gives `slot` and its blocks back.
    pub(crate) fn release(&mut self, slot: usize) {
        let blocks = std::mem::take(&mut self.held[slot]);
        self.free_blocks.extend(blocks.into_iter().rev());
        self.table[slot * self.layout.max_blocks..(slot + 1) * self.layout.max_blocks].fill(0);
        self.free_slots.push(slot);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_are_taken_per_request_and_given_back() {
        let mut p = BlockPool::new(KvLayout { blocks: 5, block_size: 4, slots: 3, max_blocks: 4 });
        let a = p.admit(9).unwrap(); // 3 blocks
        assert_eq!(&p.table()[a * 4..a * 4 + 3], [0, 1, 2]);
        assert_eq!(p.admit(9), None, "2 blocks left, 3 needed");
        let b = p.admit(8).unwrap();
        assert_eq!(p.used_blocks(), 5);
        assert_eq!(p.admit(1), None, "no block left");
        p.release(a);
        let c = p.admit(12).unwrap();
        assert_eq!(c, a, "the freed slot is reused");
        assert_eq!(&p.table()[c * 4..c * 4 + 3], [0, 1, 2]);
        assert_ne!(b, c);
        assert!(!p.could_hold(17), "more than max_blocks");
        assert!(p.could_hold(16));
    }
}
