import Synchronization

/// A multi-producer queue drained in batches by one consumer. libmosquitto's network thread and the ticker push;
/// the engine takes everything queued at once and handles it in one store transaction (group commit).
final class Inbox<Item: Sendable>: Sendable {
    /// Queued items from `head` on (a head index, so that taking a batch off a long queue does not move the rest),
    /// and urgent items, taken before them.
    private let queue = Mutex<(items: [Item], head: Int, urgent: [Item])>(([], 0, []))
    private let signal: AsyncStream<Void>.Continuation
    private let stream: AsyncStream<Void>

    init() {
        (stream, signal) = AsyncStream.makeStream(of: Void.self, bufferingPolicy: .bufferingNewest(1))
    }

    func push(_ item: Item) {
        queue.withLock { $0.items.append(item) }
        signal.yield()
    }

    /// Queues `item` ahead of everything pushed with ``push(_:)``: ticks and operator requests must not wait
    /// behind a flood of inventories (100,000 retained ones after a restart).
    func pushUrgent(_ item: Item) {
        queue.withLock { $0.urgent.append(item) }
        signal.yield()
    }

    func finish() { signal.finish() }

    /// Takes up to `limit` queued items, oldest first.
    private func take(limit: Int) -> (batch: [Item], more: Bool) {
        queue.withLock { queue in
            var batch = queue.urgent
            queue.urgent.removeAll(keepingCapacity: true)
            let end = queue.head + min(max(0, limit - batch.count), queue.items.count - queue.head)
            batch += queue.items[queue.head..<end]
            queue.head = end
            if queue.head == queue.items.count {
                queue.items.removeAll(keepingCapacity: queue.items.count <= 65_536)
                queue.head = 0
            } else if queue.head > 65_536, queue.head * 2 > queue.items.count {
                queue.items.removeFirst(queue.head)
                queue.head = 0
            }
            return (batch, queue.head < queue.items.count)
        }
    }

    /// Waits until something is queued and returns all of it (at most `limit`, the rest on the next call);
    /// `nil` once finished and drained.
    func next(limit: Int) async -> [Item]? {
        var iterator = stream.makeAsyncIterator()
        while true {
            let (batch, more) = take(limit: limit)
            if !batch.isEmpty {
                if more { signal.yield() }
                return batch
            }
            guard await iterator.next() != nil else {
                let rest = take(limit: .max).batch
                return rest.isEmpty ? nil : rest
            }
        }
    }
}

/// Messages dropped, by reason. Shown by `fleet.status`; never reset while the daemon runs.
public final class DropCounters: Sendable {
    private let counts = Mutex<[String: Int]>([:])
    private let observability: Observability?

    public init(observability: Observability? = nil) {
        self.observability = observability
    }

    public func count(_ reason: String) {
        counts.withLock { $0[reason, default: 0] += 1 }
        observability?.dropped(reason)
    }

    public var snapshot: [String: Int] { counts.withLock { $0 } }
}
