// Builds the example page (examples/web) against the kit's source. The page lives outside
// this package, so its imports of the kit and of React are pointed here: one React, the
// one this package installed.
import { fileURLToPath } from "node:url";

import { defineConfig } from "vite";

const here = (path: string) => fileURLToPath(new URL(path, import.meta.url));

export default defineConfig({
  root: here("../examples/web"),
  base: "./",
  resolve: {
    alias: [
      { find: /^creditmeter-web\/react$/, replacement: here("./src/react.ts") },
      { find: /^creditmeter-web$/, replacement: here("./src/index.ts") },
      { find: /^(react|react-dom)(\/.*)?$/, replacement: here("./node_modules/$1$2") },
    ],
  },
  esbuild: { jsx: "automatic" },
  build: {
    outDir: here("../examples/web/dist"),
    emptyOutDir: true,
    target: "es2022",
  },
});
