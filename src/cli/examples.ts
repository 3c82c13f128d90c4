// "Examples:" at the end of every command's --help, as kubectl and istioctl print them.
// One table, so that a new command without examples fails test/cli/commands.test.ts.
import type { Command } from "commander";

export const EXAMPLES: Record<string, string[]> = {
  server: [
    "meshvault server                                   # embedded CA, data in ./.meshvault",
    "meshvault server -c /etc/meshvault/server.yaml",
    "meshvault server --authority files --files-dir /etc/cacerts --grpc-listen 0.0.0.0:15012",
  ],
  agent: [
    "meshvault agent --once --ca-address 127.0.0.1:15012 --ca-root-cert .meshvault/root-cert.pem \\\n      --token-file /tmp/sleep.token --out-dir /tmp/sleep-certs",
    "meshvault agent --ca-address istiod.istio-system.svc:15012 --sds-socket /run/meshvault/sleep.sock",
    "meshvault agent -c /etc/meshvault/agent.yaml --status-listen 127.0.0.1:15020",
  ],
  tunnel: [
    "meshvault tunnel server --listen 0.0.0.0:8443 --target 127.0.0.1:8080 --allow-all --cert-dir /run/certs",
    "meshvault tunnel client --listen 127.0.0.1:9000 --connect httpbin:8443 --cert-dir /run/certs",
  ],
  "tunnel server": [
    "meshvault tunnel server --listen 0.0.0.0:8443 --target 127.0.0.1:8080 \\\n      --allow spiffe://cluster.local/ns/default/sa/sleep --cert-dir /var/run/meshvault/httpbin",
  ],
  "tunnel client": [
    "meshvault tunnel client --listen 127.0.0.1:9000 --connect httpbin:8443 \\\n      --verify-spiffe-id spiffe://cluster.local/ns/default/sa/httpbin --sds unix:///run/meshvault/sleep.sock",
  ],
  demo: ["meshvault demo", "meshvault demo --authority local --key-algorithm ec-p256 --keep"],
  vault: ["meshvault vault setup --mode vault-sign --dry-run", "meshvault vault check -c server.yaml"],
  "vault setup": [
    "meshvault vault setup --mode vault-sign --dry-run        # print the vault commands",
    "VAULT_TOKEN=... meshvault vault setup -c server.yaml --auth approle --secret-id-file /etc/meshvault/secret-id",
  ],
  "vault check": [
    "meshvault vault check -c server.yaml          # with the credentials the server uses",
    "meshvault vault check --mode vault-intermediate --auth token",
  ],
  cacerts: [
    "meshvault cacerts --once -c server.yaml                   # fill Secret istio-system/cacerts",
    "meshvault cacerts --source local --out-dir /tmp/cacerts --once",
  ],
  cert: ["meshvault cert inspect /tmp/sleep-certs/cert-chain.pem --roots /tmp/sleep-certs/root-cert.pem"],
  "cert inspect": [
    "meshvault cert inspect /tmp/sleep-certs/cert-chain.pem --roots /tmp/sleep-certs/root-cert.pem",
    "kubectl get secret -n istio-system istiod-tls -o jsonpath='{.data.tls\\.crt}' | base64 -d | meshvault cert inspect -",
  ],
  token: ["meshvault token create -n default -s sleep -o /tmp/sleep.token"],
  "token create": [
    "meshvault token create -n default -s sleep -o /tmp/sleep.token",
    "meshvault token create -n default -s sleep --ttl 1h --audience istio-ca",
  ],
  verify: [
    "meshvault verify http://127.0.0.1:15014 /tmp/sleep-certs",
    "meshvault verify -o json http://127.0.0.1:15014",
  ],
  root: ["meshvault root status -c server.yaml", "meshvault root rotate -c server.yaml --dry-run"],
  "root status": [
    "meshvault root status -c server.yaml",
    "meshvault root status -c server.yaml --server http://10.0.0.7:15014 --check kube:cluster-b -o json",
  ],
  "root rotate": [
    "meshvault root rotate -c server.yaml --dry-run          # the steps left and what each waits for",
    "meshvault root rotate -c server.yaml                    # take the next step once nothing blocks it",
    "meshvault root rotate -c server.yaml --until switched --wait 1h",
  ],
  status: [
    "meshvault status                                   # the server on 127.0.0.1:15014",
    "meshvault status 127.0.0.1:15020 -o yaml          # an agent's --status-listen",
    "meshvault status -c server.yaml -o json",
  ],
  config: ["meshvault config validate -c server.yaml"],
  "config validate": [
    "meshvault config validate -c server.yaml",
    "meshvault config validate -c agent.yaml --kind agent",
  ],
  completion: [
    "source <(meshvault completion bash)",
    'meshvault completion zsh > "${fpath[1]}/_meshvault"',
    "meshvault completion fish > ~/.config/fish/completions/meshvault.fish",
  ],
};

/** The path of a command below the program, e.g. "vault setup". */
export function commandPath(cmd: Command): string {
  const names: string[] = [];
  for (let c: Command | null = cmd; c?.parent; c = c.parent) names.unshift(c.name());
  return names.join(" ");
}

/** Adds the examples to `program` and every command below it that has some. */
export function addExamples(program: Command): void {
  const walk = (cmd: Command): void => {
    const lines = EXAMPLES[commandPath(cmd)];
    if (lines) cmd.addHelpText("after", `\nExamples:\n${lines.map((l) => `  $ ${l}`).join("\n")}\n`);
    cmd.commands.forEach(walk);
  };
  program.commands.forEach(walk);
  program.addHelpText(
    "after",
    "\nExamples:\n  $ meshvault server\n  $ meshvault demo\n  $ meshvault <command> --help\n",
  );
}
