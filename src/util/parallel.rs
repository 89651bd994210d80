//! [`map_on_threads`]: one scoped thread per piece of work, or none for a single piece.

/// Applies `f` to every item, each on a scoped thread of its own, and returns the
/// results in order. A single item runs on the calling thread: a thread costs more
/// to start than small work does.
pub(crate) fn map_on_threads<T: Send, R: Send>(items: Vec<T>, f: impl Fn(T) -> R + Sync) -> Vec<R> {
    if items.len() <= 1 {
        return items.into_iter().map(f).collect();
    }
    let f = &f;
    std::thread::scope(|scope| {
        let handles: Vec<_> = items
            .into_iter()
            .map(|item| scope.spawn(move || f(item)))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("worker threads do not panic"))
            .collect()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_come_back_in_order_from_threads_or_from_here() {
        let here = std::thread::current().id();
        let one = map_on_threads(vec![7], |x| (x * 2, std::thread::current().id()));
        assert_eq!(one, vec![(14, here)]);
        let many = map_on_threads((0..5).collect(), |x| (x * 2, std::thread::current().id()));
        assert_eq!(
            many.iter().map(|r| r.0).collect::<Vec<_>>(),
            vec![0, 2, 4, 6, 8]
        );
        assert!(many.iter().all(|r| r.1 != here));
    }
}
