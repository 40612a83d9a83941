//! CPU-bound work over a slice, split over the cores with scoped threads, order kept: for bulk
//! paths (100,000 entry digests, 100,000 entries built) where one core would be the bottleneck.

/// `items.iter().map(f).collect()`, computed on up to one thread per core when there are at
/// least `min_per_thread` items per thread (below that the thread start-up is not worth it).
/// A part whose thread panicked is computed again on the calling thread, so the result always
/// has one value per item, in order.
pub fn map_ordered<T: Sync, R: Send>(
    items: &[T],
    min_per_thread: usize,
    f: impl Fn(&T) -> R + Sync,
) -> Vec<R> {
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(items.len() / min_per_thread.max(1))
        .max(1);
    if threads == 1 {
        return items.iter().map(&f).collect();
    }
    let per = items.len().div_ceil(threads);
    let f = &f;
    std::thread::scope(|scope| {
        let parts: Vec<_> = items
            .chunks(per)
            .map(|part| {
                (
                    part,
                    scope.spawn(move || part.iter().map(f).collect::<Vec<R>>()),
                )
            })
            .collect();
        parts
            .into_iter()
            .flat_map(|(part, handle)| {
                handle
                    .join()
                    .unwrap_or_else(|_| part.iter().map(f).collect())
            })
            .collect()
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn order_and_length_are_kept() {
        let items: Vec<u32> = (0..50_001).collect();
        let out = super::map_ordered(&items, 1_000, |x| u64::from(*x) * 2);
        assert_eq!(
            out,
            items.iter().map(|x| u64::from(*x) * 2).collect::<Vec<_>>()
        );
        assert!(super::map_ordered(&[] as &[u32], 10, |x| *x).is_empty());
    }
}
