// Shared by the console's modules: every element they touch has an id in index.html.
export const byId = (id) => document.getElementById(id);
