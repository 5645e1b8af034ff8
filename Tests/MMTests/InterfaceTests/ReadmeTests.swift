// SPDX-License-Identifier: Apache-2.0
import Foundation
import Testing

/// README's code blocks marked `<!-- compiled by ReadmeTests -->` compile
/// against the built MM module (as a program's `main.swift`), so the quick
/// start and the tour cannot drift from the API. A block marked
/// `(after the tour above)` is compiled after the previous marked block.
@Suite("README code compiles")
struct ReadmeTests {
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().deletingLastPathComponent()

    /// The marked blocks, each with the code it continues.
    static func blocks() throws -> [(name: String, code: String)] {
        let text = try String(contentsOf: root.appendingPathComponent("README.md"), encoding: .utf8)
        var result: [(String, String)] = []
        var lines = text.split(separator: "\n", omittingEmptySubsequences: false)[...]
        var previous = ""
        while let line = lines.popFirst() {
            guard line.hasPrefix("<!-- compiled by ReadmeTests") else { continue }
            let continues = line.contains("after the tour above")
            guard lines.popFirst() == "```swift" else { continue }
            var code: [Substring] = []
            while let l = lines.popFirst(), l != "```" { code.append(l) }
            let block = code.joined(separator: "\n")
            let full = continues ? previous + "\n" + block : block
            result.append(("block \(result.count + 1) (\(code.first ?? ""))", full))
            previous = full
        }
        return result
    }

    @Test("the quick start, the tour and the typed layer compile")
    func compiles() throws {
        let blocks = try Self.blocks()
        #expect(blocks.count >= 3, "README lost its compiled blocks")
        let exe = URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath()
        let modules = exe.deletingLastPathComponent().appendingPathComponent("Modules").path
        guard FileManager.default.fileExists(atPath: modules + "/MM.swiftmodule") else {
            print("skipped: no MM.swiftmodule next to the test binary (\(modules))")
            return
        }
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("mm-readme-\(getpid())")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        try "module CMMShims {\n  header \"\(Self.root.path)/Sources/CMMShims/include/CMMShims.h\"\n  export *\n}\n"
            .write(to: dir.appendingPathComponent("module.modulemap"), atomically: true, encoding: .utf8)
        for (name, code) in blocks {
            let source = dir.appendingPathComponent("main.swift")
            let program = (code.contains("import MM") ? "" : "import MM\n") + code
            try program.write(to: source, atomically: true, encoding: .utf8)
            let process = Process()
            process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
            process.arguments = ["swiftc", "-emit-sil", "-o", "/dev/null", "-I", modules, "-I", dir.path, source.path]
            let pipe = Pipe()
            process.standardError = pipe
            process.standardOutput = pipe
            try process.run()
            let output = String(decoding: pipe.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
            process.waitUntilExit()
            #expect(process.terminationStatus == 0, "README \(name) does not compile:\n\(output)")
        }
    }
}
