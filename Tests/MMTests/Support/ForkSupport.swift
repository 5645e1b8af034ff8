// SPDX-License-Identifier: Apache-2.0
import Glibc
@testable import MM

/// Forks; the child runs `body` and exits 0 when it returns nil, or writes
/// the message it returns to stderr and exits 1. The parent waits at most
/// `seconds` (a hang is killed and reported) and returns nil when the child
/// passed, else a description of what went wrong. Used inside exit tests,
/// so the forking process runs nothing but the test.
func runForkedChild(seconds: Int = 20, _ body: () -> String?) -> String? {
    let pid = fork()
    if pid == 0 {
        if let failure = body() {
            writeToStandardError("child: \(failure)\n")
            _exit(1)
        }
        _exit(0)
    }
    guard pid > 0 else { return "fork failed: errno \(errno)" }
    return waitForChild(pid, seconds: seconds)
}

/// Waits for `pid` at most `seconds`; kills it if it hangs. Nil: exited 0.
func waitForChild(_ pid: pid_t, seconds: Int) -> String? {
    var status: Int32 = 0
    for _ in 0..<(seconds * 100) {
        let r = waitpid(pid, &status, WNOHANG)
        if r == pid {
            if status & 0x7f != 0 { return "child killed by signal \(status & 0x7f)" }
            let code = (status >> 8) & 0xff
            return code == 0 ? nil : "child exited \(code)"
        }
        usleep(10_000)
    }
    if getenv("MM_DEBUG_FORK_HANG") != nil {
        let command = "gdb -p \(pid) -batch -ex 'thread apply all bt' > /tmp/mm-fork-hang-\(pid).txt 2>&1"
        _ = command.withCString { system($0) }
    }
    kill(pid, SIGKILL)
    waitpid(pid, &status, 0)
    return "child did not finish within \(seconds) s: a deadlock after fork"
}

/// Ends an exit test's process that ran to the end: a failure is written
/// to stderr as `FAILED: …` (the test reads it back: Swift Testing returns
/// no observed output when the exit status is not the expected one) and the
/// status is 0 either way; a crash or hang shows as another status.
func finishExitTest(_ failure: String?) -> Never {
    if let failure { writeToStandardError("FAILED: \(failure)\n") }
    exit(0)
}

/// A pipe used to make one process wait for another.
struct ForkPipe {
    var readEnd: Int32 = -1, writeEnd: Int32 = -1
    init() {
        var fds: [Int32] = [0, 0]
        _ = pipe(&fds)
        readEnd = fds[0]
        writeEnd = fds[1]
    }
    func signal() { var b: UInt8 = 1; _ = write(writeEnd, &b, 1) }
    /// Waits for `signal()`; false when the other side closed the pipe (it died) instead.
    @discardableResult
    func await() -> Bool { var b: UInt8 = 0; return read(readEnd, &b, 1) == 1 }
    /// After fork, each process closes the end it does not use, so that a
    /// reader sees end-of-file instead of waiting for ever when the writer dies.
    func keepReading() { close(writeEnd) }
    func keepWriting() { close(readEnd) }
}

/// Whether the process runs under ThreadSanitizer, which does not support a
/// forked child of a multi-threaded process starting threads of its own.
let runningUnderThreadSanitizer: Bool = dlsym(nil, "__tsan_init") != nil  // nil: RTLD_DEFAULT
