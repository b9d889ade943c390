import Synchronization

/// A multi-producer queue drained in batches by one consumer. libmosquitto's network thread and the ticker push;
/// the engine takes everything queued at once and handles it in one store transaction (group commit).
final class Inbox<Item: Sendable>: Sendable {
    private let items = Mutex<[Item]>([])
    private let signal: AsyncStream<Void>.Continuation
    private let stream: AsyncStream<Void>

    init() {
        (stream, signal) = AsyncStream.makeStream(of: Void.self, bufferingPolicy: .bufferingNewest(1))
    }

    func push(_ item: Item) {
        items.withLock { $0.append(item) }
        signal.yield()
    }

    func finish() { signal.finish() }

    /// Waits until something is queued and returns all of it (at most `limit`, the rest on the next call);
    /// `nil` once finished and drained.
    func next(limit: Int) async -> [Item]? {
        var iterator = stream.makeAsyncIterator()
        while true {
            let batch = items.withLock { items -> [Item] in
                if items.count <= limit {
                    defer { items.removeAll(keepingCapacity: true) }
                    return items
                }
                let head = Array(items.prefix(limit))
                items.removeFirst(limit)
                return head
            }
            if !batch.isEmpty {
                if items.withLock({ !$0.isEmpty }) { signal.yield() }
                return batch
            }
            guard await iterator.next() != nil else {
                let rest = items.withLock { items -> [Item] in
                    defer { items.removeAll() }
                    return items
                }
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
