// SPDX-License-Identifier: Apache-2.0
import Foundation

/// Compiles a Swift program against the MM module this test binary was
/// built with (`swiftc -emit-sil`, so move-only checking runs too), for
/// tests of what must and must not compile.
struct SnippetCompiler {
    /// The repository's root directory.
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().deletingLastPathComponent()

    let modules: String
    let directory: URL

    /// A compiler next to the built modules; nil (with the reason) when they are not there.
    static func make() throws -> (compiler: SnippetCompiler?, reason: String?) {
        let exe = URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath()
        let modules = exe.deletingLastPathComponent().appendingPathComponent("Modules").path
        guard FileManager.default.fileExists(atPath: modules + "/MM.swiftmodule") else {
            return (nil, "no MM.swiftmodule next to the test binary (\(modules))")
        }
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("mm-snippet-\(getpid())-\(UInt32.random(in: 0...UInt32.max))")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        // MM imports the C shim module; point the compiler at its header.
        try "module CMMShims {\n  header \"\(root.path)/Sources/CMMShims/include/CMMShims.h\"\n  export *\n}\n"
            .write(to: dir.appendingPathComponent("module.modulemap"), atomically: true, encoding: .utf8)
        return (SnippetCompiler(modules: modules, directory: dir), nil)
    }

    /// Compiles `program` as `main.swift`; the exit status and the compiler's output.
    func compile(_ program: String) throws -> (status: Int32, output: String) {
        let source = directory.appendingPathComponent("main.swift")
        try program.write(to: source, atomically: true, encoding: .utf8)
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = ["swiftc", "-emit-sil", "-o", "/dev/null", "-I", modules, "-I", directory.path, source.path]
        let pipe = Pipe()
        process.standardError = pipe
        process.standardOutput = pipe
        try process.run()
        let output = String(decoding: pipe.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        process.waitUntilExit()
        return (process.terminationStatus, output)
    }

    func remove() { try? FileManager.default.removeItem(at: directory) }
}
