/// <reference types="vitest/config" />
// The kit as an ES library (two entries: the plain client and the React hooks, with React
// left to the app), and its Vitest unit tests.
import { defineConfig } from "vite";

export default defineConfig({
  build: {
    lib: {
      entry: { index: "src/index.ts", react: "src/react.ts" },
      formats: ["es"],
    },
    rollupOptions: { external: ["react", "react/jsx-runtime"] },
    sourcemap: true,
    target: "es2022",
  },
  test: {
    include: ["test/**/*.test.ts"],
    environment: "node",
  },
});
