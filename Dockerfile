# meshvault: one image for `meshvault server`, `meshvault cacerts` (Job, init container,
# sidecar next to istiod) and the other roles. Build: docker build -t meshvault/meshvault:0.1.0 .
FROM node:20-slim AS build
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --ignore-scripts
COPY tsconfig.json tsconfig.build.json ./
COPY src ./src
COPY proto ./proto
RUN npx tsc -p tsconfig.build.json && npm prune --omit=dev --ignore-scripts

FROM node:20-slim
WORKDIR /app
ENV NODE_ENV=production
COPY --from=build /app/node_modules ./node_modules
COPY --from=build /app/dist ./dist
COPY package.json ./
COPY bin ./bin
COPY proto ./proto
# Non-root (the chart runs as 65532 too); the filesystem can be read-only: state goes to
# the configured data dir (an emptyDir in the chart).
USER 65532:65532
EXPOSE 15012 15014
ENTRYPOINT ["node", "/app/bin/meshvault.js"]
CMD ["server"]
