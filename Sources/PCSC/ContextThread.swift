import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// The dedicated thread a PC/SC context's calls run on: blocking C calls never touch the Swift cooperative pool,
/// and pcsc-lite sees one thread per context, as it wants.
///
/// Its life: running (jobs run in order) → finishing (`finish()`: no new jobs; those already queued run, then the
/// final job, which releases the context) → ended (the loop returned: nothing of ours runs on it any more) → joined
/// (`join()`: pthread_join returned, the thread is gone). A POSIX thread rather than Foundation's `Thread`, because
/// only a POSIX thread can be joined: exit must not run while one of these is still inside libpcsclite, whose
/// destructor frees the client's context list (see HardwareNotes.md, "Exit and libpcsclite").
final class ContextThread: @unchecked Sendable {
    private let condition = NSCondition()
    // All below guarded by `condition`.
    private var jobs: [() -> Void] = []
    private var finishing = false
    private var finalJob: (() -> Void)?
    private var ended = false
    private var joining = false
    private var joined = false
    /// Called (from the joining thread) while waiting for the thread to end: SCardCancel, so that a blocking
    /// SCardGetStatusChange returns.
    private var interrupt: (@Sendable () -> Void)?
    /// Set once in `init`, under `condition`, before the thread can run anything.
    private var pthread = pthread_t()
    private let name: String

    /// Starts the thread. Throws `PCSCError.noService` after `ContextThreads.shutdownAll()` (the process is exiting),
    /// `PCSCError.internalError` when no thread can be created.
    init(name: String) throws {
        self.name = name
        try ContextThreads.shared.admit(self)
        condition.lock()
        defer { condition.unlock() }
        let retained = Unmanaged.passRetained(self).toOpaque()
        let result = pthread_create(&pthread, nil, { argument in
            // The thread owns one reference until its loop ends: a context dropped while a job runs does not free
            // the condition under it.
            let thread = Unmanaged<ContextThread>.fromOpaque(argument!).takeRetainedValue()
            thread.loop()
            return nil
        }, retained)
        guard result == 0 else {
            Unmanaged<ContextThread>.fromOpaque(retained).release()
            ContextThreads.shared.remove(self)
            throw PCSCError.internalError
        }
    }

    /// Whether the caller runs on this thread.
    /// Not once the loop has ended: glibc reuses a joined thread's `pthread_t` for new threads (a Dispatch worker
    /// then looked like this thread, and a second `shutdown()` from it tripped the join precondition).
    var isCurrent: Bool { !hasEnded && pthread_equal(pthread, pthread_self()) != 0 }

    /// Queues a job. Returns false, and drops the job, once the thread is finishing.
    @discardableResult
    func async(_ job: @escaping () -> Void) -> Bool {
        condition.lock()
        defer { condition.unlock() }
        guard !finishing else { return false }
        jobs.append(job)
        condition.signal()
        return true
    }

    /// Runs `body` on the thread and waits for it. Throws `PCSCError.invalidHandle` once the thread is finishing.
    func sync<T>(_ body: @escaping () throws -> T) throws -> T {
        precondition(!isCurrent, "a context's thread cannot wait for itself")
        let done = DispatchSemaphore(value: 0)
        nonisolated(unsafe) var result: Result<T, any Error>?
        let queued = async {
            result = Result { try body() }
            done.signal()
        }
        guard queued else { throw PCSCError.invalidHandle }
        done.wait()
        return try result!.get()
    }

    /// What the thread runs last, after every queued job (releasing its context), and how to wake it from a
    /// blocking call while it finishes. Set once, by the context, right after it is established.
    func setFinalJob(_ job: @escaping () -> Void, interrupt: @escaping @Sendable () -> Void) {
        condition.lock()
        defer { condition.unlock() }
        finalJob = job
        self.interrupt = interrupt
    }

    /// Stops taking jobs: the thread runs those already queued, then the final job, then ends. Safe to call twice
    /// and from any thread (the thread itself included); it does not wait (`join()` does).
    func finish() {
        condition.lock()
        finishing = true
        condition.broadcast()
        condition.unlock()
    }

    /// Whether the loop has returned (nothing of ours runs on the thread any more).
    var hasEnded: Bool { condition.withLock { ended } }

    /// Whether `join()` has completed: the thread no longer exists.
    var isJoined: Bool { condition.withLock { joined } }

    /// Finishes the thread and waits until it has ended and is reaped (pthread_join), interrupting a blocking wait
    /// (SCardCancel) every 50 ms meanwhile. Idempotent; callable from several threads at once; never from the thread
    /// itself.
    func join() {
        precondition(!isCurrent, "a context's thread cannot join itself (shut the context down from elsewhere)")
        finish()
        condition.lock()
        while !ended {
            let wake = interrupt
            condition.unlock()
            wake?()
            condition.lock()
            if !ended { _ = condition.wait(until: Date(timeIntervalSinceNow: 0.05)) }
        }
        while joining { condition.wait() }
        if joined {
            condition.unlock()
            return
        }
        joining = true
        condition.unlock()
        pthread_join(pthread, nil)
        condition.lock()
        joining = false
        joined = true
        condition.broadcast()
        condition.unlock()
        ContextThreads.shared.remove(self)
    }

    private func loop() {
        // Wait until `init` has stored `pthread` (it holds the lock while creating the thread).
        condition.lock()
        condition.unlock()
        Thread.current.name = name  // Foundation names the POSIX thread too (Linux keeps 15 bytes of it)
        while runNextJob() {}
        condition.lock()
        let last = finalJob
        finalJob = nil
        interrupt = nil
        condition.unlock()
        last?()
        condition.lock()
        ended = true
        condition.broadcast()
        condition.unlock()
        ContextThreads.shared.ended(self)
    }

    /// Runs one job; false when finishing and none is left. (A function of its own so that the job, and whatever it
    /// captured, is released before the lock is taken again: releasing a context runs its deinit, which locks.)
    private func runNextJob() -> Bool {
        condition.lock()
        while jobs.isEmpty && !finishing { condition.wait() }
        guard !jobs.isEmpty else {
            condition.unlock()
            return false
        }
        let job = jobs.removeFirst()
        condition.unlock()
        job()
        return true
    }
}

/// Every context thread of the process, so that exit can first wait for them all (`PCSCContext.shutdownAll()`).
final class ContextThreads: @unchecked Sendable {
    static let shared = ContextThreads()

    private let lock = NSLock()
    private var live: [ObjectIdentifier: ContextThread] = [:]
    /// Threads whose loop ended but nobody joined yet (their context was dropped, not shut down).
    private var unjoined: [ContextThread] = []
    private var closed = false

    /// Registers a new thread; first reaps the ended ones nobody joined, so a long-running process (a monitor that
    /// re-establishes its context after every pcscd restart) does not collect them.
    func admit(_ thread: ContextThread) throws {
        let ended = lock.withLock {
            defer { unjoined.removeAll() }
            return unjoined
        }
        for old in ended { old.join() }
        try lock.withLock {
            guard !closed else { throw PCSCError.noService }
            live[ObjectIdentifier(thread)] = thread
        }
    }

    func ended(_ thread: ContextThread) {
        lock.withLock {
            if live[ObjectIdentifier(thread)] != nil { unjoined.append(thread) }
        }
    }

    func remove(_ thread: ContextThread) {
        lock.withLock {
            live[ObjectIdentifier(thread)] = nil
            unjoined.removeAll { $0 === thread }
        }
    }

    /// How many context threads exist (not yet joined).
    var count: Int { lock.withLock { live.count } }

    /// Refuses new threads, then finishes and joins every thread (each runs its queued jobs and releases its
    /// context on itself first). Returns when none is left.
    func shutdownAll() {
        lock.withLock { closed = true }
        while true {
            let threads = lock.withLock { Array(live.values) }
            if threads.isEmpty { return }
            threads.forEach { $0.finish() }
            threads.forEach { $0.join() }
        }
    }

    /// Accepts new threads again (tests only: a test process goes on after checking `shutdownAll()`).
    func reopen() { lock.withLock { closed = false } }
}
