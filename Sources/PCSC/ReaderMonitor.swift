import Foundation

/// Something that happened to the readers or their cards.
public enum ReaderEvent: Sendable, Hashable, CustomStringConvertible {
    case readerAdded(String)
    case readerRemoved(String)
    case cardInserted(reader: String, atr: [UInt8])
    case cardRemoved(reader: String)
    /// pcscd went away (stopped, crashed, restarting); the monitor keeps trying to reach it.
    case serviceLost
    /// pcscd is back and the monitor has a new context.
    case serviceRestored

    /// A short machine-readable name: "reader-added", "card-inserted", ...
    public var kind: String {
        switch self {
        case .readerAdded: return "reader-added"
        case .readerRemoved: return "reader-removed"
        case .cardInserted: return "card-inserted"
        case .cardRemoved: return "card-removed"
        case .serviceLost: return "service-lost"
        case .serviceRestored: return "service-restored"
        }
    }

    public var reader: String? {
        switch self {
        case .readerAdded(let name), .readerRemoved(let name), .cardInserted(let name, _), .cardRemoved(let name): return name
        case .serviceLost, .serviceRestored: return nil
        }
    }

    public var atr: [UInt8]? {
        if case .cardInserted(_, let atr) = self { return atr }
        return nil
    }

    public var description: String {
        switch self {
        case .readerAdded(let name): return "reader added: \(name)"
        case .readerRemoved(let name): return "reader removed: \(name)"
        case .cardInserted(let name, let atr): return "card inserted on \(name), ATR \(atr.map { String(format: "%02X", $0) }.joined(separator: " "))"
        case .cardRemoved(let name): return "card removed from \(name)"
        case .serviceLost: return "pcscd unreachable; waiting for it to come back"
        case .serviceRestored: return "pcscd is back"
        }
    }
}

/// Watches readers and cards on its own PC/SC context, and survives pcscd restarts: when the service goes away it
/// reports `.serviceLost`, re-establishes a context with backoff, reports `.serviceRestored` and then whatever
/// changed meanwhile. Ends cleanly when the consuming task is cancelled (SCardCancel unblocks the wait).
public struct ReaderMonitor: Sendable {
    /// First and longest pause between attempts to reach pcscd.
    public var initialBackoff: Duration
    public var maximumBackoff: Duration

    public init(initialBackoff: Duration = .milliseconds(100), maximumBackoff: Duration = .seconds(2)) {
        self.initialBackoff = initialBackoff
        self.maximumBackoff = maximumBackoff
    }

    /// The events, starting with the readers and cards present now (as added/inserted).
    public func events() -> AsyncThrowingStream<ReaderEvent, any Error> {
        let (stream, continuation) = AsyncThrowingStream<ReaderEvent, any Error>.makeStream()
        let monitor = self
        let task = Task {
            do {
                try await monitor.run { continuation.yield($0) }
                continuation.finish()
            } catch is CancellationError {
                continuation.finish()
            } catch {
                continuation.finish(throwing: error)
            }
        }
        continuation.onTermination = { _ in task.cancel() }
        return stream
    }

    private func run(_ emit: (ReaderEvent) -> Void) async throws {
        var known: [String: ReaderState] = [:]
        var serviceUp = true
        var backoff = initialBackoff
        while true {
            try Task.checkCancellation()
            var context: PCSCContext?
            do {
                context = try await PCSCContext.establish(label: "onecard.pcsc.monitor")
                _ = try await context?.listReaders()  // the first real call tells whether pcscd answers
            } catch let error as PCSCError {
                await context?.shutdown()
                // pcscd gone, or answering oddly while it starts: a monitor never gives up, it retries with backoff.
                if error.transportFailure == .serviceUnavailable {
                    if serviceUp { emit(.serviceLost) }
                    serviceUp = false
                }
                try await Task.sleep(for: backoff)
                backoff = min(backoff * 2, maximumBackoff)
                continue
            }
            guard let context else { continue }
            backoff = initialBackoff
            if !serviceUp { emit(.serviceRestored) }
            serviceUp = true
            // Every way out of the watch (a PC/SC failure, cancellation) shuts the context down and joins its thread.
            let ended: Result<Void, any Error>
            do {
                try await watch(context, known: &known, emit: emit)
                ended = .success(())
            } catch {
                ended = .failure(error)
            }
            await context.shutdown()
            do {
                try ended.get()
            } catch let error as PCSCError {
                // pcscd restarted, a reader vanished mid-wait, or any other PC/SC failure: start over with a new
                // context (after a pause, unless it was only a reader change).
                if error.transportFailure == .serviceUnavailable {
                    emit(.serviceLost)
                    serviceUp = false
                } else if error != .unknownReader {
                    try await Task.sleep(for: backoff)
                }
            }
        }
    }

    private func watch(_ context: PCSCContext, known: inout [String: ReaderState], emit: (ReaderEvent) -> Void) async throws {
        var plugAndPlay = ReaderState(name: ReaderState.plugAndPlay)
        while true {
            let names = try await context.listReaders()
            for name in known.keys.sorted() where !names.contains(name) {
                if known[name]?.cardPresent == true { emit(.cardRemoved(reader: name)) }
                emit(.readerRemoved(name))
                known[name] = nil
            }
            for name in names where known[name] == nil {
                emit(.readerAdded(name))
            }
            // Current state of every reader, compared with what we knew (nothing, or the state before a restart).
            let now = try await context.waitForChanges(names.map { ReaderState(name: $0) }, timeout: .zero)
            for state in now { report(state, previous: known[state.name], emit: emit) }
            var states = now
            for state in now { known[state.name] = state }
            // Wait for card changes and for readers coming and going, until the reader list changes.
            readerListChange: while true {
                let updated = try await context.waitForChanges(states + [plugAndPlay])
                for state in updated.dropLast() where state.changed {
                    report(state, previous: known[state.name], emit: emit)
                    known[state.name] = state
                }
                states = Array(updated.dropLast())
                let pnp = updated[updated.count - 1]
                if pnp.changed {
                    plugAndPlay = pnp
                    break readerListChange
                }
                if states.contains(where: { $0.flags.contains(.unknown) || $0.flags.contains(.unavailable) }) {
                    break readerListChange
                }
            }
        }
    }

    private func report(_ state: ReaderState, previous: ReaderState?, emit: (ReaderEvent) -> Void) {
        let wasPresent = previous?.cardPresent ?? false
        let swapped = wasPresent && state.cardPresent && previous.map { $0.eventCount != state.eventCount && $0.atr != nil } == true
            && state.eventCount - (previous?.eventCount ?? 0) >= 2
        if wasPresent && (!state.cardPresent || swapped) { emit(.cardRemoved(reader: state.name)) }
        if state.cardPresent && (!wasPresent || swapped) { emit(.cardInserted(reader: state.name, atr: state.atr ?? [])) }
    }
}
