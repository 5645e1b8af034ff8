// SPDX-License-Identifier: Apache-2.0
import Foundation
#if canImport(FoundationXML)
import FoundationXML
#endif

/// What an XML parser saw in a document (an SVG timeline, the debate's page):
/// whether it parsed, each element's count, and all its text.
struct XMLDocumentSummary {
    let parsed: Bool
    let error: String
    let elements: [String: Int]
    let texts: String

    init(_ text: String) {
        final class Counter: NSObject, XMLParserDelegate {
            var elements: [String: Int] = [:]
            var texts = ""
            func parser(_ parser: XMLParser, didStartElement name: String, namespaceURI: String?, qualifiedName: String?,
                        attributes: [String: String] = [:]) { elements[name, default: 0] += 1 }
            func parser(_ parser: XMLParser, foundCharacters string: String) { texts += string }
        }
        let parser = XMLParser(data: Data(text.utf8))
        let counter = Counter()
        parser.delegate = counter
        parsed = parser.parse()
        error = parser.parserError.map { "\($0)" } ?? ""
        elements = counter.elements
        texts = counter.texts
    }
}
