// Shared by the console's modules: every element they touch has an id in index.html.
export const byId = (id) => document.getElementById(id);

// A modal yes/no; resolves true only for the confirming button.
export function confirmAction(text, label) {
  const dialog = byId("confirm");
  byId("confirm-text").textContent = text;
  byId("confirm-ok").textContent = label;
  return new Promise((resolve) => {
    const done = (answer) => {
      byId("confirm-ok").removeEventListener("click", yes);
      byId("confirm-cancel").removeEventListener("click", no);
      dialog.removeEventListener("cancel", no);
      dialog.close();
      resolve(answer);
    };
    const yes = () => done(true);
    const no = () => done(false);
    byId("confirm-ok").addEventListener("click", yes);
    byId("confirm-cancel").addEventListener("click", no);
    dialog.addEventListener("cancel", no); // Escape
    dialog.showModal();
  });
}
