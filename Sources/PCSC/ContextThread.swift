import Foundation

/// The dedicated thread a PC/SC context's calls run on: blocking C calls never touch the Swift cooperative pool,
/// and pcsc-lite sees one thread per context, as it wants.
final class ContextThread: @unchecked Sendable {
    private let condition = NSCondition()
    private var jobs: [() -> Void] = []
    private var finished = false
    // Weak: the running thread retains itself; its closure retains this object until the loop ends.
    private weak var thread: Thread?

    init(name: String) {
        // The thread keeps its owner alive until `finish()` lets the loop end: a context released while a job still
        // runs must not free the condition under it.
        let thread = Thread { self.loop() }
        thread.name = name
        thread.qualityOfService = .userInteractive
        self.thread = thread
        thread.start()
    }

    /// Whether the caller runs on this thread.
    var isCurrent: Bool { Thread.current === thread }

    func async(_ job: @escaping () -> Void) {
        condition.lock()
        jobs.append(job)
        condition.signal()
        condition.unlock()
    }

    func sync<T>(_ body: @escaping () throws -> T) throws -> T {
        let done = DispatchSemaphore(value: 0)
        nonisolated(unsafe) var result: Result<T, any Error>?
        async {
            result = Result { try body() }
            done.signal()
        }
        done.wait()
        return try result!.get()
    }

    /// Ends the thread after the jobs already queued.
    func finish() {
        condition.lock()
        finished = true
        condition.signal()
        condition.unlock()
    }

    private func loop() {
        while true {
            condition.lock()
            while jobs.isEmpty && !finished { condition.wait() }
            if jobs.isEmpty && finished {
                condition.unlock()
                return
            }
            let job = jobs.removeFirst()
            condition.unlock()
            job()
        }
    }
}
