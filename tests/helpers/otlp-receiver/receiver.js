// The end-to-end tests' OTLP receiver: Elastic's mock OTLP server (OTLP/HTTP, protobuf and
// JSON) on 127.0.0.1 and a free port. Prints `listening <url>` once it listens, then one
// line `span <json>` per span received: service, ids in hex, kind, name, attributes (an
// object), links and status. Stops on SIGTERM or when stdin closes.
'use strict';
const {MockOtlpServer, normalizeTrace} = require('@elastic/mockotlpserver');

// Ids come as hex (from a Buffer) or base64 (protobufjs's JSON form): always hex here.
function hex(id) {
    if (!id) return '';
    return /^[0-9a-f]+$/.test(id) && (id.length === 32 || id.length === 16)
        ? id
        : Buffer.from(id, 'base64').toString('hex');
}

function attributes(list) {
    if (!Array.isArray(list)) return list || {};
    const out = {};
    for (const {key, value} of list) {
        out[key] = value && Object.values(value)[0];
    }
    return out;
}

function onTrace(request) {
    const trace = normalizeTrace(request);
    for (const resourceSpans of trace.resourceSpans || []) {
        const resource = attributes(resourceSpans.resource && resourceSpans.resource.attributes);
        for (const scopeSpans of resourceSpans.scopeSpans || []) {
            for (const span of scopeSpans.spans || []) {
                const line = {
                    service: resource['service.name'],
                    traceId: hex(span.traceId),
                    spanId: hex(span.spanId),
                    parentSpanId: hex(span.parentSpanId),
                    name: span.name,
                    kind: span.kind,
                    attributes: attributes(span.attributes),
                    links: (span.links || []).map((link) => ({
                        traceId: hex(link.traceId),
                        spanId: hex(link.spanId),
                    })),
                    status: span.status || {},
                };
                process.stdout.write('span ' + JSON.stringify(line) + '\n');
            }
        }
    }
}

async function main() {
    const server = new MockOtlpServer({
        logLevel: 'warn',
        services: ['http'],
        httpHostname: '127.0.0.1',
        httpPort: 0,
        onTrace,
    });
    await server.start();
    process.stdout.write('listening ' + server.httpUrl + '\n');
    const stop = () => server.close().then(() => process.exit(0));
    process.on('SIGTERM', stop);
    process.stdin.on('end', stop);
    process.stdin.resume();
}

main().catch((error) => {
    process.stderr.write(String(error && error.stack || error) + '\n');
    process.exit(1);
});
