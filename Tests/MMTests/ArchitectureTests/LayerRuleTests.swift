// SPDX-License-Identifier: Apache-2.0
import Foundation
import Testing

/// The layer rule of README's "Architecture": each folder of `Sources/MM`
/// (one box of DESIGN.md) may name only the types, functions and constants
/// declared in the folders below it. The test reads the sources, so a change
/// that makes a lower box name a higher one fails here, naming the file,
/// the line and the name.
@Suite("Architecture: one-way layers")
struct LayerRuleTests {
    /// The vocabulary every box may use: values, locks, events, scopes, groups.
    static let foundation: Set<String> = ["Support", "Events", "Policy", "Scope", "Groups"]
    /// The memory boxes, bottom to top, each with the boxes it may name (besides the foundation).
    static let memoryBoxes: [(folder: String, mayName: Set<String>)] = [
        ("Arena", []),
        ("PageAllocator", ["Arena"]),
        ("Slab", ["Arena", "PageAllocator"]),
        ("Virtual", ["Arena", "PageAllocator"]),
        ("Placement", ["Arena", "PageAllocator", "Slab", "Virtual"]),
        ("SlowPath", ["Arena", "PageAllocator", "Slab", "Virtual", "Placement"]),
    ]
    /// Reclaim, OOM and diagnostics plug into hooks: they may use the memory
    /// boxes and one another, and no memory box names them.
    static let sideBoxes: Set<String> = ["Reclaim", "OOM", "Diagnostics"]

    static func allowed(for folder: String) -> Set<String>? {
        if folder == "MemorySystem" { return nil }  // the facade wires everything
        if foundation.contains(folder) { return foundation }
        if let box = memoryBoxes.first(where: { $0.folder == folder }) { return foundation.union(box.mayName).union([folder]) }
        if sideBoxes.contains(folder) { return foundation.union(memoryBoxes.map(\.folder)).union(sideBoxes) }
        return []
    }

    static var sourcesDirectory: URL {
        URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().deletingLastPathComponent().appendingPathComponent("Sources/MM")
    }

    /// Every Swift file of `Sources/MM`, by folder: (file name, text).
    static func sources() throws -> [String: [(name: String, text: String)]] {
        var result: [String: [(String, String)]] = [:]
        let root = sourcesDirectory
        for folder in try FileManager.default.contentsOfDirectory(atPath: root.path).sorted() {
            let dir = root.appendingPathComponent(folder)
            for file in try FileManager.default.contentsOfDirectory(atPath: dir.path).sorted() where file.hasSuffix(".swift") {
                result[folder, default: []].append((file, try String(contentsOf: dir.appendingPathComponent(file), encoding: .utf8)))
            }
        }
        return result
    }

    /// Code without comments and string literals (so prose may mention any box).
    static func code(_ text: String) -> String {
        var s = text
        for pattern in [#"\"\"\"[\s\S]*?\"\"\""#, #"/\*[\s\S]*?\*/"#, #"//[^\n]*"#, #"\"(?:[^\"\\\n]|\\.)*\""#] {
            let regex = try! NSRegularExpression(pattern: pattern)
            // Keep line breaks so that line numbers stay right.
            var out = ""
            var last = s.startIndex
            for m in regex.matches(in: s, range: NSRange(s.startIndex..., in: s)) {
                let r = Range(m.range, in: s)!
                out += s[last..<r.lowerBound]
                out += String(repeating: "\n", count: s[r].filter { $0 == "\n" }.count)
                last = r.upperBound
            }
            out += s[last...]
            s = out
        }
        return s
    }

    /// Names declared at the top level of a file: types, functions, constants.
    static func declarations(_ text: String) -> Set<String> {
        let regex = try! NSRegularExpression(
            pattern: #"^(?:@\w+(?:\([^)]*\))?\s+)*(?:(?:public|internal|package|private|fileprivate|final|nonisolated)\s+)*(?:class|struct|enum|protocol|typealias|actor|func|let|var)\s+([A-Za-z_]\w*)"#,
            options: [.anchorsMatchLines])
        let code = code(text)
        return Set(regex.matches(in: code, range: NSRange(code.startIndex..., in: code)).map {
            String(code[Range($0.range(at: 1), in: code)!])
        })
    }

    @Test("no box names a box above it; Slab and Virtual do not name each other; only MemorySystem wires the side boxes")
    func layerRule() throws {
        let sources = try Self.sources()
        #expect(Set(sources.keys) == Self.foundation.union(Self.memoryBoxes.map(\.folder)).union(Self.sideBoxes).union(["MemorySystem"]),
                "a folder of Sources/MM is not placed in the layer rule (or one is missing)")
        var owner: [String: String] = [:]
        for (folder, files) in sources {
            for file in files {
                for name in Self.declarations(file.text) { owner[name] = folder }
            }
        }
        let identifier = try NSRegularExpression(pattern: #"\b[A-Za-z_]\w*\b"#)
        var violations: [String] = []
        for (folder, files) in sources.sorted(by: { $0.key < $1.key }) {
            guard let allowed = Self.allowed(for: folder) else { continue }
            for file in files {
                let lines = Self.code(file.text).split(separator: "\n", omittingEmptySubsequences: false)
                for (n, line) in lines.enumerated() {
                    let text = String(line)
                    for m in identifier.matches(in: text, range: NSRange(text.startIndex..., in: text)) {
                        let name = String(text[Range(m.range, in: text)!])
                        if let home = owner[name], !allowed.contains(home) {
                            violations.append("\(folder)/\(file.name):\(n + 1): names \(name), declared in \(home)")
                        }
                    }
                }
            }
        }
        #expect(violations.isEmpty, Comment(rawValue: "\(violations.count) layer violation(s):\n" + violations.joined(separator: "\n")))
        // The check itself sees declarations (it would pass vacuously otherwise).
        #expect(owner["PageAllocator"] == "PageAllocator" && owner["SlowPath"] == "SlowPath" && owner["MemorySystem"] == "MemorySystem")
    }

    @Test("the check catches a lower box naming a higher one")
    func checkCatchesViolations() {
        let text = "final class X {\n    let s: SlowPath // fine in a comment: ReclaimEngine\n    let t = \"ReclaimEngine\"\n}\n"
        let code = Self.code(text)
        #expect(code.contains("SlowPath"))
        #expect(!code.contains("ReclaimEngine"))
        #expect(Self.declarations("@usableFromInline\nfinal class A {}\n@usableFromInline let b = 1\nstruct C {\n    struct D {}\n}\n") == ["A", "b", "C"])
    }
}
