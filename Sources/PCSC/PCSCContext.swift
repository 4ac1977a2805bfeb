import CPCSCLite
import Dispatch
import Foundation

/// The one choke point every PC/SC call goes through: success passes, anything else becomes a typed `PCSCError`.
@inline(__always)
func check(_ result: LONG) throws {
    guard result == SCARD_S_SUCCESS else { throw PCSCError(rawValue: Int(result)) }
}

/// A PC/SC resource-manager context with its own thread.
///
/// pcsc-lite wants one context per thread, and its calls block: every call on this context runs on the context's
/// thread, never on the Swift cooperative pool. Async methods hop onto that thread once; a whole card session runs
/// there synchronously through `PCSCCard.perform`. After pcscd restarts, calls fail with `PCSCError.noService`:
/// shut the context down and establish a new one (`ReaderMonitor` does this itself).
///
/// Ending: the context handle, and every card handle, is released on the context's own thread, never on the thread
/// that happens to drop the last reference. `shutdown()` releases the context and joins its thread; a context only
/// dropped is released on its thread all the same, and joined by `shutdownAll()`, which a program calls before it
/// exits (libpcsclite's destructor frees its context list at exit: a thread still inside libpcsclite then crashes).
public final class PCSCContext: @unchecked Sendable {
    /// Where the context's calls run.
    let worker: ContextThread
    let handle: SCARDCONTEXT
    /// The handle's released flag, shared with the thread's final job (which runs after this object may be gone).
    let state: ContextHandle

    /// Establishes a context, blocking the calling thread until it is (the call itself runs on the new thread).
    /// Throws `PCSCError.noService` when pcscd is unreachable, and after `shutdownAll()`.
    public convenience init(label: String = "onecard.pcsc") throws {
        let worker = try ContextThread(name: label)
        let handle: ContextHandle
        do {
            handle = try worker.sync { try Self.establishNow(on: worker) }
        } catch {
            worker.join()
            throw error
        }
        self.init(worker: worker, handle: handle)
    }

    private init(worker: ContextThread, handle: ContextHandle) {
        self.worker = worker
        self.handle = handle.value
        state = handle
    }

    /// Establishes a context without blocking the caller's thread.
    public static func establish(label: String = "onecard.pcsc") async throws -> PCSCContext {
        let worker = try ContextThread(name: label)
        do {
            let handle = try await withCheckedThrowingContinuation { continuation in
                let queued = worker.async { continuation.resume(with: Result { try establishNow(on: worker) }) }
                if !queued { continuation.resume(throwing: PCSCError.invalidHandle) }
            }
            return PCSCContext(worker: worker, handle: handle)
        } catch {
            // Nothing was established, so nothing blocks: the thread ends at once.
            worker.join()
            throw error
        }
    }

    /// SCardEstablishContext on the context's thread; arranges for SCardReleaseContext to be the thread's last call.
    private static func establishNow(on worker: ContextThread) throws -> ContextHandle {
        var context: SCARDCONTEXT = 0
        try check(SCardEstablishContext(DWORD(SCARD_SCOPE_SYSTEM), nil, nil, &context))
        let handle = ContextHandle(context)
        worker.setFinalJob({ handle.release() }, interrupt: { handle.cancel() })
        return handle
    }

    deinit {
        // Possibly on any thread (or on the context's own thread, from a job's closure): only ask the thread to
        // finish. It runs what is queued (a dropped card's SCardDisconnect), then SCardReleaseContext, then ends;
        // `shutdownAll()` or the next context's creation joins it.
        worker.finish()
    }

    /// Releases the context on its thread and waits until that thread has ended (a blocking wait on the context is
    /// cancelled). Afterwards every call on the context, or on its cards, throws `invalidHandle`. Idempotent; from
    /// any thread except the context's own (inside `PCSCCard.perform`, for instance), which is a programmer error.
    public func shutdown() {
        worker.join()
    }

    /// `shutdown()` without blocking the caller: the join runs on a thread of its own.
    public func shutdown() async {
        let worker = worker
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            Thread.detachNewThread {
                worker.join()
                continuation.resume()
            }
        }
    }

    /// Shuts every context of the process down and waits until all their threads have ended; later attempts to
    /// establish a context throw `noService`. Call it before the process exits, on every path (errors and signals
    /// included): libpcsclite frees its client state in a destructor at exit, and a thread still inside it then
    /// crashes (SIGSEGV in list_seek). Idempotent; not from a context's thread.
    public static func shutdownAll() {
        ContextThreads.shared.shutdownAll()
    }

    /// How many context threads exist now (ended threads nobody joined included).
    public static var threadCount: Int { ContextThreads.shared.count }

    /// Whether the context's thread has ended (after `shutdown()`, always).
    public var threadHasEnded: Bool { worker.hasEnded }

    /// Whether pcscd still considers the context valid. (After a pcscd restart pcsc-lite may still say yes:
    /// the first real call then fails with `noService`.) False once released.
    public var isValid: Bool { state.isValid }

    /// Runs `body` on the context's thread and returns its result.
    /// Throws `invalidHandle` once the context is shut down (or being shut down).
    func run<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
        try await withCheckedThrowingContinuation { continuation in
            let queued = worker.async { continuation.resume(with: Result { try body() }) }
            if !queued { continuation.resume(throwing: PCSCError.invalidHandle) }
        }
    }

    /// Cancels a `waitForChanges` blocked on this context (SCardCancel; callable from any thread; nothing once the
    /// context is released).
    public func cancel() { state.cancel() }

    // MARK: Readers

    /// The names of the connected readers; empty when there are none.
    public func listReaders() async throws -> [String] {
        try await run { try self.listReadersNow() }
    }

    func listReadersNow() throws -> [String] {
        var length: DWORD = 0
        let first = SCardListReaders(handle, nil, nil, &length)
        if first == SCARD_E_NO_READERS_AVAILABLE { return [] }
        try check(first)
        var buffer = [CChar](repeating: 0, count: Int(length))
        let second = SCardListReaders(handle, nil, &buffer, &length)
        if second == SCARD_E_NO_READERS_AVAILABLE { return [] }
        try check(second)
        // A multi-string: names separated by NUL, ended by an empty name.
        return buffer.split(separator: 0).map { String(decoding: $0.map { UInt8(bitPattern: $0) }, as: UTF8.self) }
    }

    /// Every reader with its current state (and the ATR of the card on it), without waiting.
    public func readerStates() async throws -> [ReaderState] {
        try await run {
            let names = try self.listReadersNow()
            guard !names.isEmpty else { return [] }
            let queries = names.map { ReaderState(name: $0) }
            do {
                return try self.waitForChangesNow(queries, timeoutMilliseconds: 0)
            } catch PCSCError.timeout {
                return queries
            }
        }
    }

    /// Waits until the state of one of `readers` differs from the state given in it, or `timeout` passes
    /// (`nil`: forever). Task cancellation calls SCardCancel on this context and throws `CancellationError`.
    /// Include `ReaderState.plugAndPlay` to learn about readers added or removed.
    public func waitForChanges(_ readers: [ReaderState], timeout: Duration? = nil) async throws -> [ReaderState] {
        let milliseconds: DWORD = timeout.map { DWORD(max(0, $0.components.seconds * 1000 + $0.components.attoseconds / 1_000_000_000_000_000)) } ?? DWORD(INFINITE)
        do {
            return try await withTaskCancellationHandler {
                try Task.checkCancellation()
                return try await run { try self.waitForChangesNow(readers, timeoutMilliseconds: milliseconds) }
            } onCancel: {
                self.cancel()
            }
        } catch PCSCError.cancelled {
            throw CancellationError()
        }
    }

    func waitForChangesNow(_ readers: [ReaderState], timeoutMilliseconds: DWORD) throws -> [ReaderState] {
        let names = readers.map { strdup($0.name) }
        defer { names.forEach { free($0) } }
        var states = readers.enumerated().map { index, reader in
            var state = SCARD_READERSTATE()
            state.szReader = UnsafePointer(names[index])
            state.dwCurrentState = DWORD(reader.flags.rawValue) | DWORD(reader.eventCount) << 16
            return state
        }
        try check(SCardGetStatusChange(handle, timeoutMilliseconds, &states, DWORD(states.count)))
        return states.enumerated().map { index, state in
            var copy = state
            let count = min(Int(copy.cbAtr), 33)
            let atr = withUnsafeBytes(of: &copy.rgbAtr) { Array($0.prefix(count)) }
            let flags = ReaderState.Flags(rawValue: UInt32(truncatingIfNeeded: state.dwEventState) & 0xFFFF)
            return ReaderState(
                name: readers[index].name, flags: flags.subtracting(.changed),
                eventCount: Int(state.dwEventState >> 16 & 0xFFFF),
                atr: flags.contains(.present) && count > 0 ? atr : nil,
                changed: flags.contains(.changed))
        }
    }

    // MARK: Cards

    /// Connects to the card on `reader`. Throws `noSmartcard` when there is none, `sharingViolation` when another
    /// program holds the reader exclusively.
    public func connect(reader: String, share: ShareMode = .shared, protocols: CardProtocol = .any) async throws -> PCSCCard {
        try await run {
            var card: SCARDHANDLE = 0
            var active: DWORD = 0
            try check(SCardConnect(self.handle, reader, share.rawValue, protocols.rawValue, &card, &active))
            return PCSCCard(context: self, reader: reader, handle: card, activeProtocol: CardProtocol(rawValue: active))
        }
    }

    /// Retries `connect` while the reader is busy (`sharingViolation`), for at most `timeout`.
    public func connect(reader: String, waitingUpTo timeout: Duration, share: ShareMode = .shared) async throws -> PCSCCard {
        let deadline = ContinuousClock.now + timeout
        while true {
            do {
                return try await connect(reader: reader, share: share)
            } catch PCSCError.sharingViolation where ContinuousClock.now < deadline {
                try await Task.sleep(for: .milliseconds(100))
            }
        }
    }
}

/// A context handle and whether it was released. The only calls on it from other threads than the context's
/// (SCardCancel, SCardIsValidContext) hold the same lock as SCardReleaseContext, so none runs during or after the
/// release: once the context's thread has ended, nothing calls libpcsclite with this handle.
final class ContextHandle: @unchecked Sendable {
    let value: SCARDCONTEXT
    private let lock = NSLock()
    private var released = false

    init(_ value: SCARDCONTEXT) { self.value = value }

    /// SCardReleaseContext, once; the context thread's final job.
    func release() {
        lock.withLock {
            guard !released else { return }
            released = true
            _ = SCardReleaseContext(value)
        }
    }

    func cancel() {
        lock.withLock {
            if !released { _ = SCardCancel(value) }
        }
    }

    var isValid: Bool {
        lock.withLock { !released && SCardIsValidContext(value) == SCARD_S_SUCCESS }
    }
}

/// How other programs may use the reader while we are connected.
public struct ShareMode: Sendable, Hashable {
    let rawValue: DWORD
    public static let shared = ShareMode(rawValue: DWORD(SCARD_SHARE_SHARED))
    public static let exclusive = ShareMode(rawValue: DWORD(SCARD_SHARE_EXCLUSIVE))
    /// Talk to the reader without a card (SCardControl only).
    public static let direct = ShareMode(rawValue: DWORD(SCARD_SHARE_DIRECT))
}

/// The card protocol (T=0, T=1, raw), as a set for requests.
public struct CardProtocol: OptionSet, Sendable, Hashable {
    public let rawValue: DWORD
    public init(rawValue: DWORD) { self.rawValue = rawValue }
    public static let t0 = CardProtocol(rawValue: DWORD(SCARD_PROTOCOL_T0))
    public static let t1 = CardProtocol(rawValue: DWORD(SCARD_PROTOCOL_T1))
    public static let raw = CardProtocol(rawValue: DWORD(SCARD_PROTOCOL_RAW))
    public static let any: CardProtocol = [.t0, .t1]
}

/// What to do with the card when disconnecting or reconnecting.
public struct Disposition: Sendable, Hashable {
    let rawValue: DWORD
    public static let leave = Disposition(rawValue: DWORD(SCARD_LEAVE_CARD))
    /// Warm reset: the card is selected again (a MIFARE card forgets its authentication).
    public static let reset = Disposition(rawValue: DWORD(SCARD_RESET_CARD))
    public static let unpower = Disposition(rawValue: DWORD(SCARD_UNPOWER_CARD))
    public static let eject = Disposition(rawValue: DWORD(SCARD_EJECT_CARD))
}

/// A reader's state as SCardGetStatusChange reports it.
public struct ReaderState: Sendable, Hashable, CustomStringConvertible {
    /// pcsc-lite's pseudo reader whose event counter changes when readers are added or removed.
    public static let plugAndPlay = "\\\\?PnP?\\Notification"

    public struct Flags: OptionSet, Sendable, Hashable {
        public let rawValue: UInt32
        public init(rawValue: UInt32) { self.rawValue = rawValue }
        public static let ignore = Flags(rawValue: UInt32(SCARD_STATE_IGNORE))
        public static let changed = Flags(rawValue: UInt32(SCARD_STATE_CHANGED))
        public static let unknown = Flags(rawValue: UInt32(SCARD_STATE_UNKNOWN))
        public static let unavailable = Flags(rawValue: UInt32(SCARD_STATE_UNAVAILABLE))
        public static let empty = Flags(rawValue: UInt32(SCARD_STATE_EMPTY))
        public static let present = Flags(rawValue: UInt32(SCARD_STATE_PRESENT))
        public static let exclusive = Flags(rawValue: UInt32(SCARD_STATE_EXCLUSIVE))
        public static let inUse = Flags(rawValue: UInt32(SCARD_STATE_INUSE))
        public static let mute = Flags(rawValue: UInt32(SCARD_STATE_MUTE))
    }

    public var name: String
    /// The state (as last known: pass it back to wait for the next change).
    public var flags: Flags
    /// pcsc-lite's per-reader event counter (upper 16 bits of dwEventState): it moves on every insert and removal,
    /// so a remove + insert slept through still shows.
    public var eventCount: Int
    /// The ATR of the card in the reader, if one is present.
    public var atr: [UInt8]?
    /// Whether this reader's state changed in the last wait.
    public var changed: Bool

    public init(name: String, flags: Flags = [], eventCount: Int = 0, atr: [UInt8]? = nil, changed: Bool = false) {
        self.name = name
        self.flags = flags
        self.eventCount = eventCount
        self.atr = atr
        self.changed = changed
    }

    public var cardPresent: Bool { flags.contains(.present) }

    public var description: String { "\(name): \(cardPresent ? "card" : "empty") (events \(eventCount))" }
}
